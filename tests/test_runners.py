"""processes=N: real forked workers in one group; SIGKILL loses nothing."""
import os
import signal

import redis

from helpers import wait_until


def _handled(url, key="handled"):
    client = redis.Redis.from_url(url, decode_responses=True)
    try:
        return client.lrange(key, 0, -1)
    finally:
        client.close()


async def test_two_worker_processes_split_a_stream(app_factory, redis_url):
    app = app_factory()

    @app.agent("work", group="g", processes=2, name="proc")
    async def handle(record):
        # runs in a forked worker: report through Redis, which every process shares
        client = redis.asyncio.Redis.from_url(redis_url)
        await client.rpush("handled", f"{os.getpid()} {record.key}")
        await client.aclose()

    await app.startup()
    runner = app._runners["proc"]
    assert len(runner.pids) == 2 and os.getpid() not in runner.pids
    ids = await app.send_batch("work", [{"i": i} for i in range(400)])
    await wait_until(lambda: len(_handled(redis_url)) >= 400, timeout=20, what="400 handled by workers")
    rows = [line.split() for line in _handled(redis_url)]
    assert sorted(entry for _, entry in rows) == sorted(ids)
    assert {int(pid) for pid, _ in rows} <= set(runner.pids)
    await wait_until(lambda: app.stats("proc").processed == 400, what="worker counters published")
    assert app.stats("proc").handler_seconds > 0


async def test_sigkilled_worker_is_restarted_and_loses_nothing(app_factory, redis_url, sync_redis):
    app = app_factory()

    @app.agent("crashy", group="g", processes=1, name="crashy", count=50)
    async def handle(record):
        client = redis.asyncio.Redis.from_url(redis_url)
        if not await client.exists("go"):
            await client.set("holding", os.getpid())
            while not await client.exists("go"):
                await __import__("asyncio").sleep(0.01)
        await client.rpush("handled", record.key)
        await client.aclose()

    await app.startup()
    runner = app._runners["crashy"]
    ids = await app.send_batch("crashy", [{"i": i} for i in range(100)])
    await wait_until(lambda: sync_redis.get("holding"), what="worker holding unacked entries")
    victim = int(sync_redis.get("holding"))
    assert sync_redis.xpending("crashy", "g")["pending"] >= 1
    os.kill(victim, signal.SIGKILL)
    await wait_until(lambda: runner.restarts == 1 and runner.pids and victim not in runner.pids, what="restart")
    sync_redis.set("go", 1)
    await wait_until(lambda: set(ids) <= set(_handled(redis_url)), timeout=20, what="all 100 handled")
    await wait_until(lambda: sync_redis.xpending("crashy", "g")["pending"] == 0, what="nothing pending")
