"""StreamConsumer against real servers: restarts, reclaim, own pending first."""

import asyncio

import redis

from streammachine import ConsumerConfig
from streammachine.engine.consumer import StreamConsumer
from streammachine.engine.specs import AgentSpec
from streammachine.redis.entries import single_stream_entries
from tests.helpers import wait_until

FAST = dict(block_ms=100, retry_delay_ms=50, claim_idle_ms=300)


async def left_pending(client, stream: str, consumer: str, count: int) -> None:
    """Group "g" on ``stream`` with ``count`` entries that ``consumer`` read and never acknowledged."""
    await client.xgroup_create(stream, "g", id="0", mkstream=True)
    for i in range(count):
        await client.xadd(stream, {"i": i})
    await client.xreadgroup("g", consumer, {stream: ">"}, count=count)


async def test_server_restart_mid_stream_consumption_resumes(app_factory, private_server):
    app = app_factory(url=private_server.url)
    seen = set()

    @app.agent("durable", group="g", block_ms=100)
    async def handle(record):
        seen.add(record.message["i"])

    await app.startup()
    await app.send_batch("durable", [{"i": i} for i in range(50)])
    await wait_until(lambda: len(seen) == 50)
    private_server.restart()  # SIGTERM + start on the same port and AOF
    producer = redis.Redis.from_url(private_server.url)
    producer.xadd("durable", {"i": 50})
    producer.close()
    await wait_until(lambda: "50" in seen, timeout=20, what="consumption after restart")
    assert app.stats("handle").reconnects >= 1


async def test_own_pending_entries_come_first_after_restart(redis_url):
    client = redis.asyncio.Redis.from_url(redis_url)
    await left_pending(client, "own", "c1", 5)  # a previous life of "c1" read everything and died before acking
    await client.xadd("own", {"i": 5})
    order = []
    spec = AgentSpec(
        name="own",
        handler=lambda m: order.append(m.message["i"]),
        stream="own",
        group="g",
        config=ConsumerConfig(**FAST),
    )
    consumer = StreamConsumer(client, spec, "c1")
    consumer.start()
    await wait_until(lambda: len(order) == 6)
    consumer.stop()
    await consumer.task
    assert order == ["0", "1", "2", "3", "4", "5"]
    assert (await client.xpending("own", "g"))["pending"] == 0
    await client.aclose()


async def test_orphans_of_a_dead_consumer_are_reclaimed(redis_url):
    client = redis.asyncio.Redis.from_url(redis_url)
    await left_pending(client, "orphans", "dead-consumer", 3)
    got = []
    spec = AgentSpec(
        name="o", handler=lambda m: got.append(m.key), stream="orphans", group="g", config=ConsumerConfig(**FAST)
    )
    consumer = StreamConsumer(client, spec, "alive")
    consumer.start()
    await wait_until(lambda: len(got) == 3, what="reclaimed after claim_idle_ms")
    consumer.stop()
    await consumer.task
    assert (await client.xpending("orphans", "g"))["pending"] == 0
    await client.aclose()


async def test_slow_live_work_is_not_stolen(redis_url):
    """A handler slower than claim_idle_ms keeps its entries fresh; the other consumer does not reclaim them."""
    client = redis.asyncio.Redis.from_url(redis_url)
    await client.xgroup_create("slow", "g", id="0", mkstream=True)
    calls = []

    async def slow(message):
        calls.append(message.key)
        await asyncio.sleep(0.8)

    config = ConsumerConfig(count=1, block_ms=50, claim_idle_ms=300, retry_delay_ms=50)
    spec = AgentSpec(name="slow", handler=slow, stream="slow", group="g", config=config)
    first, second = StreamConsumer(client, spec, "first"), StreamConsumer(client, spec, "second")
    first.start()
    await client.xadd("slow", {"i": 1})
    await wait_until(lambda: calls, what="first consumer picked it up")
    second.start()
    await wait_until(lambda: first.stats.processed == 1, timeout=5)
    first.stop(), second.stop()
    await asyncio.gather(first.task, second.task)
    assert len(calls) == 1


def test_single_stream_entries_accepts_resp2_and_resp3_shapes():
    entries = [(b"1-0", {b"a": b"1"})]
    assert single_stream_entries([[b"s", entries]]) == entries
    assert single_stream_entries({b"s": [entries]}) == entries
    assert single_stream_entries([]) == [] and single_stream_entries(None) == []


async def test_resp3_client_works_end_to_end(redis_url):
    client = redis.asyncio.Redis.from_url(redis_url, protocol=3)
    got = []
    spec = AgentSpec(
        name="r3",
        handler=lambda m: got.append(m.message),
        stream="r3",
        group="g",
        config=ConsumerConfig(start_id="0", **FAST),
    )
    await client.xadd("r3", {"k": "v"})
    consumer = StreamConsumer(client, spec, "c")
    consumer.start()
    await wait_until(lambda: got == [{"k": "v"}])
    consumer.stop()
    await consumer.task
    await client.aclose()


async def test_block_longer_than_the_default_socket_timeout(app_factory, sync_redis):
    """redis-py's default 5 s socket timeout must not cut a 6 s BLOCK into a reconnect loop."""
    app = app_factory()
    seen = []

    @app.agent("longblock", group="g", block_ms=6000, name="longblock")
    async def handle(record):
        seen.append(record.key)

    await app.startup()

    def blocked_read_outlived_5s():
        return any(c.get("cmd") == "xreadgroup" and int(c["idle"]) >= 5 for c in sync_redis.client_list())

    await wait_until(blocked_read_outlived_5s, timeout=8, interval=0.2, what="a blocking read alive past 5 s")
    entry = await app.send("longblock", {"x": 1})
    await wait_until(lambda: seen == [entry], timeout=10)
    assert app.stats("longblock").reconnects == 0
