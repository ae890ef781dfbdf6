"""Issue 11: a consumer or timer that must not die, a group that vanishes, a full server, retry rules, dead letters."""

from __future__ import annotations

import asyncio
import logging

import pytest
import redis

from streammachine import App, ConsumerConfig
from streammachine.config import ConfigError
from tests.helpers import wait_until

FAST = ConsumerConfig(count=20, block_ms=50, retry_delay_ms=20, claim_idle_ms=1000, max_deliveries=3)


async def cancelled_task() -> None:
    task = asyncio.get_running_loop().create_task(asyncio.sleep(10))
    task.cancel()
    await task  # raises CancelledError inside the handler: not the consumer's own cancellation


async def test_a_handler_raising_cancelled_error_is_a_failure_not_the_end(app_factory, sync_redis):
    app = app_factory(consumer_config=FAST)
    seen: dict = {}

    @app.agent("jobs", group="g", name="jobs")
    async def handle(message):
        seen[message.key] = seen.get(message.key, 0) + 1
        if seen[message.key] == 1:
            await cancelled_task()

    await app.startup()
    await app.send_batch("jobs", [{"n": i} for i in range(50)])
    await wait_until(lambda: len(seen) == 50 and all(n == 2 for n in seen.values()), what="each retried once")
    await wait_until(lambda: sync_redis.xpending("jobs", "g")["pending"] == 0, what="all acked")
    assert app.stats("jobs").failed == 50
    assert (await app.health_check())["status"] == "healthy"


async def test_a_timer_raising_cancelled_error_keeps_its_schedule(app_factory):
    app = app_factory()
    runs = []

    @app.timer(0.02, name="flaky")
    async def flaky():
        runs.append(1)
        await cancelled_task()

    await app.startup()
    await wait_until(lambda: len(runs) >= 5, what="five runs")
    assert app.timers["flaky"].failures >= 4


async def test_a_consumer_task_that_ends_unexpectedly_is_restarted(app_factory, sync_redis, caplog):
    app = app_factory(consumer_config=FAST)
    handled = []

    @app.agent("jobs", group="g", name="jobs")
    async def handle(message):
        handled.append(message.key)

    await app.startup()
    runner = app._runners["jobs"]
    first = runner.consumers[0].task
    first.cancel()  # not a stop: something cancelled the task from outside
    await wait_until(lambda: runner.consumers[0].task is not first and not runner.consumers[0].task.done(),
                     what="a new consumer task")  # fmt: skip
    assert "ended unexpectedly" in caplog.text and runner.restarts == 1
    await app.send_batch("jobs", [{"n": i} for i in range(10)])
    await wait_until(lambda: len(handled) == 10, what="the restarted consumer handles")
    assert (await app.health_check())["status"] == "healthy"


@pytest.mark.parametrize("vanish", ["XGROUP DESTROY", "DEL stream", "FLUSHDB"])
async def test_a_vanished_group_is_recreated_without_skipping(app_factory, sync_redis, vanish, caplog):
    app = app_factory(consumer_config=FAST)
    handled = set()

    @app.agent("orders", group="g", name="orders")
    async def handle(message):
        handled.add(int(message.message["n"]))

    await app.startup()
    await app.send_batch("orders", [{"n": i} for i in range(100)])
    await wait_until(lambda: len(handled) == 100, what="first part handled")
    if vanish == "XGROUP DESTROY":
        sync_redis.xgroup_destroy("orders", "g")
    elif vanish == "DEL stream":
        sync_redis.delete("orders")
    else:
        sync_redis.flushdb()
    # written while the group is gone: a re-creation at "$" would skip these
    client = redis.Redis.from_url(app.redis.url)
    for i in range(100, 150):
        client.xadd("orders", {"n": i})
    client.close()
    with caplog.at_level(logging.WARNING):
        await wait_until(lambda: handled >= set(range(150)), what="what was written meanwhile handled")
    assert "had vanished; re-created" in caplog.text


async def test_a_consumer_reconnecting_to_a_full_server_drains_it(private_server, tmp_path):
    """At maxmemory (noeviction) XGROUP CREATE ... MKSTREAM is refused: a consumer that (re)starts on an
    existing group must not need it, since reading and acking still work."""
    client = redis.Redis.from_url(private_server.url)
    client.xgroup_create("backlog", "g", id="0", mkstream=True)
    client.config_set("maxmemory-policy", "noeviction")
    used = int(client.info("memory")["used_memory"])
    client.config_set("maxmemory", used + 2_000_000)
    written = 0
    with pytest.raises(redis.exceptions.OutOfMemoryError):
        while True:
            client.xadd("backlog", {"n": written, "pad": "x" * 1000})
            written += 1
    app = App("full", redis_url=private_server.url, consumer_config=FAST.replace(start_id="0"))
    handled = []

    @app.agent("backlog", group="g", name="drain")
    async def drain(message):
        handled.append(message.key)

    await app.startup()
    try:
        await wait_until(lambda: len(handled) == written, 20, what=f"{written} entries drained at maxmemory")
    finally:
        await app.shutdown()
        client.close()


async def test_retry_rules_and_backoff(app_factory, sync_redis):
    config = FAST.replace(max_deliveries=10, retry_on=(ValueError,), dead_letter_on=(ZeroDivisionError,))
    app = app_factory(consumer_config=config)
    deliveries: dict = {}

    @app.agent("work", group="g", name="work")
    async def handle(message):
        kind = message.message["kind"]
        deliveries[kind] = deliveries.get(kind, 0) + 1
        raise {"retry": ValueError, "other": KeyError, "never": ZeroDivisionError}[kind]("boom")

    await app.startup()
    await app.send_batch("work", [{"kind": "retry"}, {"kind": "other"}, {"kind": "never"}])
    await wait_until(lambda: sync_redis.xlen("work:dead") == 3, 20, what="all three dead-lettered")
    assert deliveries == {"retry": 10, "other": 1, "never": 1}
    delays = [FAST.replace(retry_delay_ms=100, retry_max_delay_ms=1000).retry_delay(n) for n in (1, 2, 3, 4, 5, 9)]
    assert 0.05 <= delays[0] <= 0.1 and 0.1 <= delays[1] <= 0.2 and 0.2 <= delays[2] <= 0.4
    assert all(0.5 <= d <= 1.0 for d in delays[4:])  # capped
    with pytest.raises(ConfigError, match="retry_backoff"):
        FAST.replace(retry_backoff=0.5)
    with pytest.raises(ConfigError, match="retry_on"):
        FAST.replace(retry_on="ValueError")


async def test_a_dead_letter_keeps_the_records_own_dlq_fields(app_factory, sync_redis):
    app = app_factory(consumer_config=FAST.replace(on_error="dead_letter"))

    @app.agent("replayed", group="g")
    async def handle(message):
        raise RuntimeError("second failure")

    await app.startup()
    await app.send("replayed", {"n": 1, "_dlq_error": "first failure", "_dlq_deliveries": 5})
    await wait_until(lambda: sync_redis.xlen("replayed:dead") == 1, what="dead-lettered")
    ((_, fields),) = sync_redis.xrange("replayed:dead")
    assert fields["_orig_dlq_error"] == "first failure" and fields["_orig_dlq_deliveries"] == "5"
    assert fields["_dlq_error"] == "RuntimeError: second failure" and fields["n"] == "1"
