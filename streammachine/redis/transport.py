"""How commands reach Redis for one client, chosen once: raw RESP on a pooled connection, or redis-py.

The hot paths (a consumer's XACK + XREADGROUP, XADD batches, a stage's
commit) send several commands per round trip. On a plain ``redis.asyncio``
client they are encoded here in one tight loop and written in one go
(``resp.py``); on anything else (a cluster, a single-connection client, a
subclass) they go through a redis-py pipeline. A caller makes
``Transport(client)`` once and never chooses again.

``atomic=True`` wraps the commands in MULTI/EXEC: Redis applies all of them
or none. Only for keys of one hash slot (always true on a single server);
``same_slot`` tells.
"""

from __future__ import annotations

from typing import Any, List, Sequence, Union

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ResponseError

from streammachine.redis.resp import direct_pool, encode_command, encode_commands, round_trip

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
    if not is_cluster_client(client):
        return True
    from redis.crc import key_slot

    return len({key_slot(k.encode() if isinstance(k, str) else k) for k in keys}) <= 1


class Transport:
    """Sends a list of commands in one round trip and returns their raw replies, in order."""

    def __init__(self, client: RedisClient) -> None:
        self.client = client
        self.pool = direct_pool(client)

    @property
    def raw(self) -> bool:
        """True when commands go as RESP written here (replies are then raw: bytes, lists, ints)."""
        return self.pool is not None

    def encode(self, commands: Sequence[Command]) -> bytes:
        """``commands`` in RESP (raw transports only); raises UnicodeEncodeError before anything is sent."""
        assert self.pool is not None
        return encode_commands(commands, self.pool.get_encoder())

    async def send(self, commands: Sequence[Command], *, atomic: bool = False) -> List[Any]:
        """Run ``commands`` in one round trip (MULTI/EXEC around them when ``atomic``); the first error raises."""
        if not commands:
            return []
        if self.pool is not None:
            return await self.send_encoded(self.encode(commands), len(commands), atomic=atomic)
        pipe = self.client.pipeline(transaction=atomic)
        for command in commands:
            pipe.execute_command(*command)
        return list(await pipe.execute())

    async def send_encoded(self, payload: bytes, count: int, *, atomic: bool = False) -> List[Any]:
        """``send`` for commands already encoded with ``encode`` (a caller that encodes ahead to fail early)."""
        assert self.pool is not None
        if not atomic:
            return await round_trip(self.pool, payload, count)
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
