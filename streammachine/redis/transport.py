"""How commands reach Redis for one client, chosen once: raw RESP on a pooled connection, or redis-py.

The hot paths (a consumer's XACK + XREADGROUP, XADD batches, a stage's
commit) send several commands per round trip. On a plain ``redis.asyncio``
client they are encoded here in one tight loop and written in one go
(``resp.py``); on anything else (a cluster, a single-connection client, a
subclass, a synchronous client) they go through a redis-py pipeline. A
caller makes ``Transport(client)`` once and never chooses again.

``atomic=True`` wraps the commands in MULTI/EXEC: Redis applies all of them
or none. Only for keys of one hash slot (always true on a single server);
``same_slot`` tells.

``raise_on_error=False`` reads every reply and returns error replies in
place (as ``ResponseError`` objects) instead of raising the first one: the
caller learns what each command did (``send_batch``'s per-record outcome).

``prepare`` checks and encodes commands ahead of sending, so a caller that
sends in several round trips can refuse the lot before the first is written.

A synchronous client (the CLI's, the magics') works too: its ``send`` does
its I/O at once and never suspends, so ``sync.run_sync`` can run a core
coroutine over it.
"""

from __future__ import annotations

import inspect
from typing import Any, List, NamedTuple, Optional, Sequence, Union

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.cluster import RedisCluster as SyncCluster
from redis.crc import key_slot
from redis.exceptions import ResponseError

from streammachine.redis.resp import direct_pool, encode_command, encode_commands, round_trip
from streammachine.redis.sync import plain

RedisClient = Union[Redis, RedisCluster]
"""Every async client StreamMachine talks through (``make_client`` returns one)."""

Command = Sequence[Any]


def is_cluster_client(client: Any) -> bool:
    """True for a redis.asyncio RedisCluster (or a pipeline of one)."""
    from redis.asyncio.cluster import ClusterPipeline

    return isinstance(client, (RedisCluster, ClusterPipeline))


def same_slot(client: Any, *keys: Union[str, bytes]) -> bool:
    """True when one MULTI may touch all ``keys``: always on a single server, same hash slot on a cluster.

    Hash-tagged names share a slot: "{ticks}" and "{ticks}:dead" do, "ticks" and "ticks:dead" do not.
    """
    client = plain(client)
    if not is_cluster_client(client) and not isinstance(client, SyncCluster):  # the CLI's client is a sync one
        return True
    return len({key_slot(k.encode() if isinstance(k, str) else k) for k in keys}) <= 1


class Prepared(NamedTuple):
    """Commands checked for sending: their RESP encoding on a raw transport, else the commands as they are."""

    commands: Sequence[Command]
    payload: Optional[bytes] = None


def _check_encodable(commands: Sequence[Command], encoder: Any) -> None:
    """Raise UnicodeEncodeError for a str argument the client could not encode (redis-py only finds out mid-send)."""
    encoding = getattr(encoder, "encoding", "utf-8")
    errors = getattr(encoder, "encoding_errors", "strict")
    for command in commands:
        for arg in command:
            if type(arg) is str and not arg.isascii():
                arg.encode(encoding, errors)


class Transport:
    """Sends a list of commands in one round trip and returns their raw replies, in order."""

    def __init__(self, client: Any) -> None:
        self.client = client = plain(client)  # a core running over a sync client hands its wrapper
        self.pool = direct_pool(client)

    @property
    def raw(self) -> bool:
        """True when commands go as RESP written here (replies are then raw: bytes, lists, ints)."""
        return self.pool is not None

    def encode(self, commands: Sequence[Command]) -> bytes:
        """``commands`` in RESP (raw transports only); raises UnicodeEncodeError before anything is sent."""
        assert self.pool is not None
        return encode_commands(commands, self.pool.get_encoder())

    def prepare(self, commands: Sequence[Command]) -> Prepared:
        """``commands`` ready to send; UnicodeEncodeError here means a str argument cannot be sent."""
        if self.pool is not None:
            return Prepared(commands, self.encode(commands))
        _check_encodable(commands, self.client.get_encoder())
        return Prepared(commands)

    async def send(
        self, commands: Sequence[Command], *, atomic: bool = False, raise_on_error: bool = True
    ) -> List[Any]:
        """Run ``commands`` in one round trip (MULTI/EXEC around them when ``atomic``).

        The first error reply raises, unless ``raise_on_error=False`` (not atomic): then every
        reply is read and errors come back in place.
        """
        if not commands:
            return []
        return await self.send_prepared(self.prepare(commands), atomic=atomic, raise_on_error=raise_on_error)

    async def send_prepared(
        self, prepared: Prepared, *, atomic: bool = False, raise_on_error: bool = True
    ) -> List[Any]:
        """``send`` for commands from ``prepare``."""
        if prepared.payload is not None:
            return await self.send_encoded(
                prepared.payload, len(prepared.commands), atomic=atomic, raise_on_error=raise_on_error
            )
        if atomic and is_cluster_client(self.client):
            # redis-py (8.1) queues each command of a cluster transaction by asyncio.run in a new thread: a
            # client first initialized there keeps connections bound to that thread's (closed) loop.
            await self.client.initialize()
        pipe = self.client.pipeline(transaction=atomic)
        for command in prepared.commands:
            pipe.execute_command(*command)
        replies = pipe.execute(raise_on_error=raise_on_error or atomic)
        if inspect.isawaitable(replies):  # a redis.asyncio client (a sync one has done the round trip already)
            replies = await replies
        for reply in replies:
            # a cluster pipeline returns a lost node's ConnectionError in place too: that is no reply, raise it
            if isinstance(reply, Exception) and not isinstance(reply, ResponseError):
                raise reply
        return list(replies)

    async def send_encoded(
        self, payload: bytes, count: int, *, atomic: bool = False, raise_on_error: bool = True
    ) -> List[Any]:
        """``send`` for commands already encoded with ``encode`` (a caller that encodes ahead to fail early)."""
        assert self.pool is not None
        if not atomic:
            return await round_trip(self.pool, payload, count, raise_on_error=raise_on_error)
        encoder = self.pool.get_encoder()
        wrapped = encode_command(("MULTI",), encoder) + payload + encode_command(("EXEC",), encoder)
        replies = await round_trip(self.pool, wrapped, count + 2)
        results = replies[-1]
        if results is None:
            raise ResponseError("EXEC aborted: the transaction was discarded")
        for result in results:
            if isinstance(result, Exception):
                raise result
        return list(results)
