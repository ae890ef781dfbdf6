"""Stream and group inspection (redis/inspect.py): one async core, run on async and sync clients alike."""

import pytest
import redis.asyncio

from streammachine.redis.inspect import (
    NotAStream,
    fetch_groups,
    fetch_groups_sync,
    stream_info,
    stream_info_sync,
)


def _orders(sync_redis) -> list:
    sync_redis.xgroup_create("orders", "billing", id="0", mkstream=True)
    sync_redis.xgroup_create("orders", "audit", id="$")
    ids = [sync_redis.xadd("orders", {"i": i}) for i in range(3)]
    sync_redis.xreadgroup("billing", "c1", {"orders": ">"}, count=2)
    return ids


async def test_pending_lag_and_consumers_per_group(redis_url, sync_redis):
    _orders(sync_redis)
    client = redis.asyncio.Redis.from_url(redis_url)
    groups = await fetch_groups(client, ["orders", "orders", "not-yet"])
    await client.aclose()
    assert groups == {
        ("orders", "audit"): {"pending": 0, "lag": 3, "consumers": 0},
        ("orders", "billing"): {"pending": 2, "lag": 1, "consumers": 1},
    }
    assert fetch_groups_sync(sync_redis, ["not-yet", "orders"]) == groups


def _timeless(info: dict) -> dict:
    """``info`` without the consumers' idle times (they move between two reads)."""
    for group in info["groups"]:
        for consumer in group["consumer_details"]:
            consumer.pop("idle"), consumer.pop("inactive", None)
    return info


async def test_stream_info_is_the_same_from_async_and_sync_clients(redis_url, sync_redis):
    ids = _orders(sync_redis)
    sync_redis.xadd("orders:dead", {"i": "x"})
    client = redis.asyncio.Redis.from_url(redis_url)  # bytes replies; the sync client decodes: same result
    full = dict(consumers=True, dead_letter_stream="orders:dead")
    info = await stream_info(client, "orders", **full)
    await client.aclose()
    assert _timeless(info) == _timeless(stream_info_sync(sync_redis, "orders", **full))
    assert (info["stream"], info["length"], info["first_id"], info["last_id"]) == ("orders", 3, ids[0], ids[2])
    billing = next(g for g in info["groups"] if g["name"] == "billing")
    assert (billing["pending"], billing["lag"], billing["last-delivered-id"]) == (2, 1, ids[1])
    assert [(c["name"], c["pending"]) for c in billing["consumer_details"]] == [("c1", 2)]
    assert info["dead_letter"] == {"stream": "orders:dead", "length": 1}
    plain = stream_info_sync(sync_redis, "orders")
    assert "dead_letter" not in plain and all("consumer_details" not in g for g in plain["groups"])


def test_a_missing_stream_or_another_type_is_named(sync_redis):
    sync_redis.set("plain", "x")
    with pytest.raises(NotAStream, match="stream 'nope' does not exist on this server") as missing:
        stream_info_sync(sync_redis, "nope")
    assert isinstance(missing.value, KeyError) and str(missing.value) == missing.value.args[0]
    with pytest.raises(NotAStream, match="key 'plain' is a Redis string, not a stream"):
        stream_info_sync(sync_redis, "plain")
