"""RedisConnection: the reference API on a real server."""

import pytest

from streammachine import RedisConnection


async def test_context_manager_pipeline_xadd_and_health(redis_url, sync_redis):
    async with RedisConnection(url=redis_url) as redis:
        assert await redis.health_check() is True
        ids = await redis.pipeline_xadd("stream", [{"key": "value"}, {"n": 2}])
        assert [i for i, _ in sync_redis.xrange("stream")] == ids
    assert redis._client is None  # closed on exit


async def test_health_check_is_false_not_an_exception_when_down():
    redis = RedisConnection(url="redis://127.0.0.1:1/0")
    assert await redis.health_check() is False
    await redis.close()


async def test_consumer_iterator_acks_after_the_loop_body(redis_url, sync_redis):
    async with RedisConnection(url=redis_url) as redis:
        sync_redis.xgroup_create("it", "g", id="0", mkstream=True)
        ids = await redis.pipeline_xadd("it", [{"i": i} for i in range(3)])
        seen = []
        consumer = redis.consumer("it", group="g", consumer_name="c1", block_ms=100)
        async for message in consumer:
            seen.append(message.key)
            if len(seen) == 2:
                # the second entry's body has not finished: it is still pending
                assert sync_redis.xpending("it", "g")["pending"] == 2
            if len(seen) == 3:
                break
        await consumer.aclose()
        assert seen == ids
        # entries whose loop body finished are acked; the one we broke out of stays pending (at-least-once)
        assert sync_redis.xpending("it", "g")["pending"] == 1


def test_arguments_win_over_the_environment(monkeypatch):
    monkeypatch.setenv("REDIS_URL", "redis://env-host:1/0")
    assert RedisConnection(url="redis://arg-host:2/0").url == "redis://arg-host:2/0"
    assert RedisConnection(host="h", port=3, db=4).url == "redis://h:3/4"
    assert RedisConnection().url == "redis://env-host:1/0"
    assert RedisConnection(max_connections=3).max_connections == 3


def test_password_never_in_repr():
    redis = RedisConnection(url="redis://:hunter2@h:1/0")
    assert "hunter2" not in repr(redis) and "hunter2" not in redis.safe_url


async def test_consumer_iterator_reads_resp3_replies(redis_url, sync_redis):
    """redis-py's RESP3 read reply is a dict; the iterator used to index it like a RESP2 list."""
    redis = RedisConnection(url=redis_url + "?protocol=3")
    sync_redis.xgroup_create("r3it", "g", id="0", mkstream=True)
    entry = sync_redis.xadd("r3it", {"k": "v"})
    consumer = redis.consumer("r3it", group="g", consumer_name="c1", block_ms=100)
    message = await consumer.__anext__()
    assert (message.key, message.message) == (entry, {"k": "v"})
    await consumer.aclose()
    await redis.close()


async def test_consumer_refuses_positional_group_and_consumer(redis_url, sync_redis):
    """Regression (issue 11 item 13): upstream's consumer(channel, consumer, group) called positionally here
    silently swapped the group and the consumer name; now it is a TypeError saying what to write."""
    async with RedisConnection(url=redis_url) as redis:
        with pytest.raises(TypeError, match=r"consumer\('it', 'c1', 'g'\): group and consumer_name are keyword-only"):
            redis.consumer("it", "c1", "g")
        with pytest.raises(TypeError, match="consumer_name= is required"):
            redis.consumer("it", group="g")
        assert sync_redis.exists("it") == 0  # refused before any group (or stream) was made
        sync_redis.xadd("it", {"k": "v"})
        consumer = redis.consumer("it", consumer_name="c1", start_id="0", block_ms=100)
        assert (await consumer.__anext__()).message == {"k": "v"}
        await consumer.aclose()
        assert [g["name"] for g in sync_redis.xinfo_groups("it")] == ["eventengine"]  # the default group
