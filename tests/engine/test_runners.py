"""processes=N: real forked workers in one group; SIGKILL loses nothing."""

import os
import signal

import redis

from tests.helpers import process_gone, wait_until, wait_until_sync


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


def _dead_pid() -> int:
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


async def test_a_crashed_local_predecessor_is_taken_over_at_once(app_factory, sync_redis):
    """A restarted process has a new pid (a new consumer name): it adopts the old name's pending entries
    without waiting claim_idle_ms, and removes the dead name from the group."""
    import socket

    sync_redis.xgroup_create("takeover", "g", id="0", mkstream=True)
    ids = [sync_redis.xadd("takeover", {"i": i}) for i in range(5)]
    dead = f"{socket.gethostname()}-{_dead_pid()}-old:handle:0"
    sync_redis.xreadgroup("g", dead, {"takeover": ">"}, count=10)  # read, never acked: the process "died"
    remote = "other-host-1-old:handle:0"  # another host's consumer: left to XAUTOCLAIM
    sync_redis.xadd("takeover", {"i": 5})
    sync_redis.xreadgroup("g", remote, {"takeover": ">"}, count=10)

    app = app_factory()
    handled = []

    @app.agent("takeover", group="g", claim_idle_ms=60_000)
    async def handle(record):
        handled.append(record.key)

    await app.startup()
    await wait_until(lambda: sorted(handled) == sorted(ids), what="the dead consumer's entries handled")

    def names():
        return {c["name"] for c in sync_redis.xinfo_consumers("takeover", "g")}

    # the dead name goes once its last entry was handled and acknowledged: a moment after the handler ran
    await wait_until(lambda: dead not in names(), what="the dead consumer's name removed")
    assert remote in names()
    assert sync_redis.xpending_range("takeover", "g", "-", "+", 10, consumername=remote)  # untouched


def test_workers_exit_when_their_parent_is_killed(redis_url, tmp_path):
    """A SIGKILLed app cannot stop its workers: they notice on their own and exit instead of running on."""
    import subprocess
    import sys
    import textwrap

    pid_file = tmp_path / "worker.pid"
    script = tmp_path / "parent.py"
    script.write_text(
        textwrap.dedent(f"""
        from streammachine import App
        app = App("orphans", redis_url={redis_url!r})

        @app.agent("orph", group="g", processes=1, name="orph", block_ms=100)
        async def handle(record):
            pass

        @app.timer(0.05, name="report")
        async def report():
            runner = app._runners.get("orph")
            if runner is not None and runner.pids:
                open({str(pid_file)!r}, "w").write(str(runner.pids[0]))

        app.start()
    """)
    )
    parent = subprocess.Popen([sys.executable, str(script)])
    try:
        worker = int(
            wait_until_sync(lambda: pid_file.exists() and pid_file.read_text(), timeout=20, what="the worker pid")
        )
        parent.kill()
        parent.wait(10)

        wait_until_sync(lambda: process_gone(worker), timeout=10, what="the orphaned worker to exit")
    finally:
        parent.kill()
