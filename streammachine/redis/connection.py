"""RedisConnection: where to connect, the client pool, pipelined XADD."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any, AsyncIterator, List, Mapping, Optional, Sequence

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from streammachine._redact import redact_url
from streammachine.config import Settings
from streammachine.embedded import default_url
from streammachine.redis.entries import single_stream_entries
from streammachine.redis.records import encode_record, find_unencodable
from streammachine.redis.resp import direct_pool, encode_commands, round_trip

if TYPE_CHECKING:
    from streammachine.message import Message

log = logging.getLogger("streammachine.redis.connection")

# Pipelines are sent in slices so a huge send_batch never builds one giant
# request buffer in memory.
PIPELINE_CHUNK = 5000


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


def make_client(url: str, *, max_connections: int, cluster: bool = False, **kwargs: Any):
    """A redis.asyncio client for ``url`` (a RedisCluster for redis+cluster:// or cluster=True)."""
    if cluster or url.startswith(("redis+cluster://", "rediss+cluster://")):
        from redis.asyncio.cluster import RedisCluster

        plain = url.replace("+cluster", "", 1)
        return RedisCluster.from_url(plain, max_connections=max_connections, **kwargs)
    pool = aioredis.BlockingConnectionPool.from_url(url, max_connections=max_connections, timeout=30, **kwargs)
    return aioredis.Redis(connection_pool=pool)


async def async_client(target: Any):
    """The redis.asyncio client behind an App, a RedisConnection, or a client itself (helpers that accept any)."""
    connection = getattr(target, "redis", target)  # an App's RedisConnection
    if hasattr(connection, "get_client"):
        return await connection.get_client()
    return connection


async def ensure_group(client, stream: str, group: str, start_id: str = "$") -> bool:
    """Create the consumer group (and the stream); True if it was created."""
    try:
        await client.xgroup_create(stream, group, id=start_id, mkstream=True)
        return True
    except ResponseError as exc:
        if "BUSYGROUP" in str(exc):
            return False
        raise


def _trim_args(maxlen: Optional[int], minid: Optional[str]) -> tuple:
    if maxlen is not None:
        return ("MAXLEN", "~", maxlen)
    return ("MINID", "~", minid) if minid is not None else ()


async def _xadd_chunks(
    pool, topic: str, encoded: List[Mapping], maxlen: Optional[int], minid: Optional[str] = None
) -> List[str]:
    """``pipeline_xadd`` on a plain client: XADDs in RESP written straight to a pooled connection, chunk by chunk.

    Every chunk is encoded before the first is written, so a string that is
    not valid UTF-8 (named in the error) leaves the batch unsent.
    """
    head = ("XADD", topic, *_trim_args(maxlen, minid), "*")
    encoder = pool.get_encoder()
    chunks = []
    try:
        for start in range(0, len(encoded), PIPELINE_CHUNK):
            commands = []
            for fields in encoded[start : start + PIPELINE_CHUNK]:
                args = list(head)
                for pair in fields.items():
                    args += pair
                commands.append(args)
            chunks.append((encode_commands(commands, encoder), len(commands)))
    except UnicodeEncodeError:
        raise find_unencodable(topic, encoded) or ValueError(f"stream {topic!r}: a field is not valid UTF-8") from None
    ids: List[str] = []
    for payload, count in chunks:
        ids.extend(i.decode() if type(i) is bytes else i for i in await round_trip(pool, payload, count))
    return ids


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
        self.settings = settings or Settings.from_env()
        self.max_connections = max_connections or self.settings.max_connections
        self._explicit = dict(url=url, host=host, port=port, db=db)
        self.url: Optional[str] = explicit_url(self.settings, **self._explicit)
        self._client = None
        self._lock: Optional[asyncio.Lock] = None

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
            self.url = await asyncio.to_thread(resolve_url, self.settings, **self._explicit)
        return self.url

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
        return self._client

    def new_client(self, *, max_connections: int = 2, **kwargs: Any):
        """A separate client on the resolved URL (for blocking reads that must not starve the pool)."""
        if self.url is None:
            raise RuntimeError("RedisConnection.resolve() must run first")
        return make_client(self.url, max_connections=max_connections, cluster=self.is_cluster, **kwargs)

    async def pipeline_xadd(
        self,
        topic: str,
        records: Sequence[Mapping[str, Any]],
        *,
        maxlen: Optional[int] = None,
        minid: Optional[str] = None,
    ) -> List[str]:
        """XADD every record in pipelined round trips; returns the new ids in order.

        ``maxlen`` or ``minid`` (one of them) trims the stream as it grows (approximately, ``~``).

        Every record is validated before anything is sent, so a bad one
        (named in the error) never leaves the batch half-written.
        """
        encoded = [encode_record(topic, r) for r in records]
        client = await self.get_client()
        pool = direct_pool(client)
        if pool is not None:
            return await _xadd_chunks(pool, topic, encoded, maxlen, minid)
        unencodable = find_unencodable(topic, encoded)  # chunks go out one by one: refuse before the first
        if unencodable is not None:
            raise unencodable
        ids: List[str] = []
        for start in range(0, len(encoded), PIPELINE_CHUNK):
            pipe = client.pipeline(transaction=False)
            for fields in encoded[start : start + PIPELINE_CHUNK]:
                pipe.xadd(topic, fields, maxlen=maxlen, minid=minid if maxlen is None else None, approximate=True)
            ids.extend(i.decode() if isinstance(i, bytes) else i for i in await pipe.execute())
        return ids

    async def xadd(
        self, topic: str, record: Mapping[str, Any], *, maxlen: Optional[int] = None, minid: Optional[str] = None
    ) -> str:
        fields = encode_record(topic, record)
        client = await self.get_client()
        pool = direct_pool(client)
        if pool is not None:
            return (await _xadd_chunks(pool, topic, [fields], maxlen, minid))[0]
        try:
            new_id = await client.xadd(
                topic, fields, maxlen=maxlen, minid=minid if maxlen is None else None, approximate=True
            )
        except UnicodeEncodeError:  # raised while packing the command: nothing was sent
            raise find_unencodable(topic, [fields]) or ValueError(
                f"stream {topic!r}: a field is not valid UTF-8"
            ) from None
        return new_id.decode() if isinstance(new_id, bytes) else new_id

    async def consumer(
        self,
        stream: str,
        group: str,
        consumer_name: str,
        *,
        count: int = 10,
        block_ms: int = 1000,
        start_id: str = "$",
    ) -> AsyncIterator[Message]:
        """Iterate a consumer group: each entry is acknowledged once the loop body for it finished.

        Pending entries of ``consumer_name`` come first, so a restarted
        consumer picks up where it stopped. An exception in the loop body
        leaves the current entry pending (at-least-once).
        """
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
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    async def __aenter__(self) -> RedisConnection:
        await self.get_client()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"RedisConnection({self.safe_url})"
