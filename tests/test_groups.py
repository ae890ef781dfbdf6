"""Group backlog from XINFO GROUPS, async and sync readers alike."""

import redis.asyncio

from streammachine.redis.inspect import fetch_groups, fetch_groups_sync


async def test_pending_lag_and_consumers_per_group(redis_url, sync_redis):
    sync_redis.xgroup_create("orders", "billing", id="0", mkstream=True)
    sync_redis.xgroup_create("orders", "audit", id="$")
    for i in range(3):
        sync_redis.xadd("orders", {"i": i})
    sync_redis.xreadgroup("billing", "c1", {"orders": ">"}, count=2)
    client = redis.asyncio.Redis.from_url(redis_url)
    groups = await fetch_groups(client, ["orders", "orders", "not-yet"])
    await client.aclose()
    assert groups == {
        ("orders", "audit"): {"pending": 0, "lag": 3, "consumers": 0},
        ("orders", "billing"): {"pending": 2, "lag": 1, "consumers": 1},
    }
    assert fetch_groups_sync(sync_redis, ["not-yet", "orders"]) == groups
