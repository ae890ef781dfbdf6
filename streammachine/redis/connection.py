"""RedisConnection: where to connect, the client pool and its transport; XADD through ``producer``."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from typing import TYPE_CHECKING, Any, AsyncIterator, List, Mapping, Optional, Sequence

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from streammachine._redact import redact_url, scrub
from streammachine.config import BadRedisURL, Settings, check_redis_url
from streammachine.embedded import default_url, ping, read_runtime_file, recover_shared_server, url_address
from streammachine.redis import producer
from streammachine.redis.entries import as_text, single_stream_entries
from streammachine.redis.transport import Transport

if TYPE_CHECKING:
    from streammachine.message import Message

log = logging.getLogger("streammachine.redis.connection")


# The embedded server a connection found through the fallback is pinged this often; after this many silent
# pings in a row, recover() runs (a stall of a few seconds is ridden out without it).
EMBEDDED_WATCH_SECONDS = 1.0
EMBEDDED_WATCH_MISSES = 3


def explicit_url(settings: Settings, *, url=None, host=None, port=None, db=None) -> Optional[str]:
    """The URL the user asked for (arguments, then REDIS_URL, then REDIS_HOST/PORT/DB), or None."""
    if url:
        return url
    if host is not None or port is not None or db is not None:
        return f"redis://{host or 'localhost'}:{port or 6379}/{db or 0}"
    if settings.redis_url:
        return settings.redis_url
    if settings.redis_configured:
        return f"redis://{settings.redis_host or 'localhost'}:{settings.redis_port or 6379}/{settings.redis_db or 0}"
    return None


def resolve_url(settings: Settings, **explicit: Any) -> str:
    """Blocking: the explicit URL, else localhost:6379 if it answers, else the embedded server."""
    return explicit_url(settings, **explicit) or default_url(settings.home, embedded=settings.embedded)


def _keepalive_options() -> dict:
    """Probe an idle connection after 30 s, every 10 s, give up after 3 misses (where the platform has the knobs)."""
    wanted = {"TCP_KEEPIDLE": 30, "TCP_KEEPINTVL": 10, "TCP_KEEPCNT": 3}
    return {getattr(socket, name): value for name, value in wanted.items() if hasattr(socket, name)}


# Set explicitly, whatever the redis-py version's defaults (5.x has no timeouts at all: a server that stops
# answering would hang a send forever). Callers override them (a consumer's socket_timeout exceeds its BLOCK).
CLIENT_DEFAULTS = {
    "socket_connect_timeout": 5.0,
    "socket_timeout": 10.0,
    "socket_keepalive": True,
    "socket_keepalive_options": _keepalive_options(),
}


def make_client(url: str, *, max_connections: int, cluster: bool = False, **kwargs: Any):
    """A redis.asyncio client for ``url`` (a RedisCluster for redis+cluster:// or cluster=True).

    A URL that does not parse raises BadRedisURL (password hidden).
    """
    check_redis_url(url)
    defaults = CLIENT_DEFAULTS
    if url.startswith("unix://"):  # no TCP there, and its connection class takes no keepalive options
        defaults = {k: v for k, v in defaults.items() if not k.startswith("socket_keepalive")}
    kwargs = {**defaults, **kwargs}
    try:
        if cluster or url.startswith(("redis+cluster://", "rediss+cluster://")):
            from redis.asyncio.cluster import RedisCluster

            plain = url.replace("+cluster", "", 1)
            return RedisCluster.from_url(plain, max_connections=max_connections, **kwargs)
        pool = aioredis.BlockingConnectionPool.from_url(url, max_connections=max_connections, timeout=30, **kwargs)
    except ValueError as exc:  # e.g. a query argument redis-py cannot parse
        raise BadRedisURL(f"bad Redis URL {redact_url(url)}: {scrub(str(exc), [url])}") from None
    return aioredis.Redis.from_pool(pool)  # the client owns its pool: aclose() disconnects it too


async def async_client(target: Any):
    """The redis.asyncio client behind an App, a RedisConnection, or a client itself (helpers that accept any)."""
    connection = getattr(target, "redis", target)  # an App's RedisConnection
    if hasattr(connection, "get_client"):
        return await connection.get_client()
    return connection


async def ensure_group(client, stream: str, group: str, start_id: str = "$") -> bool:
    """Create the consumer group (and the stream) unless it exists; True if it was created.

    It looks first (XINFO GROUPS): XGROUP CREATE ... MKSTREAM is refused at
    maxmemory (it may allocate), and a consumer reconnecting to a full server
    must still be able to read and ack what is there.
    """
    try:
        if any(as_text(g["name"]) == group for g in await client.xinfo_groups(stream)):
            return False
    except ResponseError as exc:
        if "no such key" not in str(exc).lower():
            raise
    try:
        await client.xgroup_create(stream, group, id=start_id, mkstream=True)
        return True
    except ResponseError as exc:
        if "BUSYGROUP" in str(exc):
            return False
        raise


class RedisConnection:
    """Async Redis connection manager with connection pooling.

    Arguments win over the environment (REDIS_URL, then REDIS_HOST/PORT/DB);
    with nothing configured it uses localhost:6379, or the embedded server
    when nothing answers there.
    """

    def __init__(
        self,
        host: Optional[str] = None,
        port: Optional[int] = None,
        db: Optional[int] = None,
        max_connections: Optional[int] = None,
        url: Optional[str] = None,
        *,
        settings: Optional[Settings] = None,
    ) -> None:
        self.settings = settings or Settings.current()
        self.max_connections = max_connections or self.settings.max_connections
        self._explicit = dict(url=url, host=host, port=port, db=db)
        self.url: Optional[str] = explicit_url(self.settings, **self._explicit)
        self._client = None
        self._transport: Optional[Transport] = None
        self._lock: Optional[asyncio.Lock] = None
        self.embedded = False  # the URL is the per-user embedded server's, found through the fallback
        self._watchdog: Optional[asyncio.Task] = None

    @property
    def configured(self) -> bool:
        return explicit_url(self.settings, **self._explicit) is not None

    @property
    def is_cluster(self) -> bool:
        return self.settings.redis_cluster or bool(self.url and "+cluster://" in self.url)

    @property
    def safe_url(self) -> str:
        return redact_url(self.url) if self.url else "(not resolved yet)"

    async def resolve(self) -> str:
        if self.url is None:
            url = await asyncio.to_thread(resolve_url, self.settings, **self._explicit)
            info = read_runtime_file(self.settings.home)
            self.embedded = bool(info and info["url"] == url)
            self.url = url
        return self.url

    async def recover(self) -> Optional[str]:
        """The hook for repeated connection failures: a new URL to reconnect to, or None (keep retrying).

        Only for the embedded server found through the fallback: the runtime
        file is read again (the server may have been started elsewhere, on
        another port), and a server this process started that died is started
        again on the same port and password. When the URL changed, the pooled
        client follows it; clients made earlier with ``new_client()`` must be
        replaced by the caller.
        """
        if not self.embedded or self.url is None:
            return None
        moved = await asyncio.to_thread(recover_shared_server, self.settings.home, self.url)
        if moved is None or moved == self.url:
            return None
        log.warning("the embedded server moved to %s; reconnecting there", redact_url(moved))
        self.url = moved
        old, self._client = self._client, None
        if old is not None:
            await old.aclose()
        return moved

    async def _watch_embedded(self) -> None:
        """Keep the embedded server this connection uses reachable: after a few seconds of silence, recover()."""
        misses = 0
        while True:
            await asyncio.sleep(EMBEDDED_WATCH_SECONDS)
            host, port, password = url_address(self.url or "")
            if port is not None and await ping(host, port, password):
                misses = 0
                continue
            misses += 1
            if misses >= EMBEDDED_WATCH_MISSES:
                misses = 0
                try:
                    await self.recover()
                except Exception as exc:  # a failed restart is retried at the next misses, never fatal
                    log.error("could not restart the embedded server: %s", exc)

    async def get_client(self):
        """The connected client (created on first use)."""
        if self._client is None:
            if self._lock is None:
                self._lock = asyncio.Lock()
            async with self._lock:
                if self._client is None:
                    url = await self.resolve()
                    self._client = make_client(
                        url, max_connections=self.max_connections, cluster=self.settings.redis_cluster
                    )
                    if self.embedded and self._watchdog is None:
                        self._watchdog = asyncio.get_running_loop().create_task(
                            self._watch_embedded(), name="streammachine:embedded-watchdog"
                        )
        return self._client

    def new_client(self, *, max_connections: int = 2, **kwargs: Any):
        """A separate client on the resolved URL (for blocking reads that must not starve the pool)."""
        if self.url is None:
            raise RuntimeError("RedisConnection.resolve() must run first")
        return make_client(self.url, max_connections=max_connections, cluster=self.is_cluster, **kwargs)

    async def transport(self) -> Transport:
        """How commands reach the connected client (raw RESP or redis-py), chosen once per client."""
        client = await self.get_client()
        if self._transport is None or self._transport.client is not client:
            self._transport = Transport(client)
        return self._transport

    async def pipeline_xadd(
        self,
        topic: str,
        records: Sequence[Mapping[str, Any]],
        *,
        maxlen: Optional[int] = None,
        minid: Optional[str] = None,
        atomic: bool = False,
    ) -> List[str]:
        """XADD every record in pipelined round trips; returns the new ids in order.

        ``maxlen`` (else ``minid``) trims the stream as it grows (approximately, ``~``).

        Every record is validated before anything is sent, so a bad one
        (named in the error) never leaves the batch half-written. ``maxlen``
        defaults to STREAMMACHINE_STREAM_MAXLEN. ``atomic=True``: one
        MULTI/EXEC, all or nothing. Otherwise records Redis refuses raise
        ``producer.BatchSendError`` naming what was written.
        """
        return await producer.send_batch(
            await self.transport(), topic, records, maxlen=self._maxlen(maxlen), minid=minid, atomic=atomic
        )

    async def xadd(
        self, topic: str, record: Mapping[str, Any], *, maxlen: Optional[int] = None, minid: Optional[str] = None
    ) -> str:
        """XADD one record; its new id. ``maxlen`` defaults to STREAMMACHINE_STREAM_MAXLEN."""
        return await producer.send(await self.transport(), topic, record, maxlen=self._maxlen(maxlen), minid=minid)

    def _maxlen(self, maxlen: Optional[int]) -> Optional[int]:
        return self.settings.stream_maxlen if maxlen is None else maxlen

    def consumer(
        self,
        stream: str,
        *positional: Any,
        group: Optional[str] = None,
        consumer_name: Optional[str] = None,
        count: int = 10,
        block_ms: int = 1000,
        start_id: str = "$",
    ) -> AsyncIterator[Message]:
        """Iterate a consumer group: ``async for message in redis.consumer(stream, group=..., consumer_name=...)``.

        Each entry is acknowledged once the loop body for it finished; pending
        entries of ``consumer_name`` come first, so a restarted consumer picks
        up where it stopped; an exception in the loop body leaves the current
        entry pending (at-least-once). ``group`` defaults to
        STREAMMACHINE_DEFAULT_GROUP. ``group`` and ``consumer_name`` are
        keyword-only: upstream's positional order is (channel, consumer, group),
        so a positional call is refused rather than guessed.
        """
        if positional:
            given = ", ".join(repr(arg) for arg in (stream, *positional))
            raise TypeError(
                f"RedisConnection.consumer({given}): group and consumer_name are keyword-only "
                "(positional order differs between versions: upstream's is (channel, consumer, group)); "
                "call consumer(stream, group=..., consumer_name=...)"
            )
        if not consumer_name:
            raise TypeError(f"RedisConnection.consumer({stream!r}): consumer_name= is required (this consumer's name)")
        return self._consume(stream, group or self.settings.default_group, consumer_name, count, block_ms, start_id)

    async def _consume(
        self, stream: str, group: str, consumer_name: str, count: int, block_ms: int, start_id: str
    ) -> AsyncIterator[Message]:
        from streammachine.message import received_messages

        client = await self.get_client()
        await ensure_group(client, stream, group, start_id)
        cursor = "0"
        while True:
            reply = await client.xreadgroup(
                group, consumer_name, {stream: cursor}, count=count, block=None if cursor == "0" else block_ms
            )
            entries = single_stream_entries(reply)
            if cursor == "0" and not entries:
                cursor = ">"
                continue
            for (entry_id, _), message in zip(entries, received_messages(stream, consumer_name, time.time(), entries)):
                if message is not None:  # None: deleted while pending, nothing to hand over
                    yield message
                await client.xack(stream, group, entry_id)

    async def health_check(self) -> bool:
        try:
            client = await self.get_client()
            return bool(await asyncio.wait_for(client.ping(), timeout=2))
        except Exception:
            return False

    async def close(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        if self._client is not None:
            client, self._client, self._transport = self._client, None, None
            await client.aclose()

    async def __aenter__(self) -> RedisConnection:
        await self.get_client()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"RedisConnection({self.safe_url})"
