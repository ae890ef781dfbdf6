"""App end to end on a real server: produce, consume, fan-out, groups, shutdown."""

import asyncio

import pytest

from streammachine import App, Message
from streammachine.app import AppStateError
from tests.helpers import wait_until, wait_until_sync


async def test_produce_and_consume(app_factory):
    app = app_factory()
    seen = []

    @app.agent("orders", group="workers")
    async def handle(record: Message):
        seen.append(record)

    await app.startup()
    ids = await app.send_batch("orders", [{"n": i, "tags": ["a", "b"]} for i in range(50)])
    await wait_until(lambda: len(seen) == 50, what="50 messages handled")
    assert [m.key for m in seen] == ids
    first = seen[0]
    assert first.topic == "orders" and first.message == {"n": "0", "tags": '["a","b"]'}
    assert first.json("tags") == ["a", "b"]
    assert first.consumer_id.endswith(":handle:0")
    assert first.timer.startswith("orders: task ") and first.timer.endswith(" ms")
    # no 'sent' field was included: sent is the send time, the id's (issue 11 item 14)
    assert first.sent == first.timestamp_ms / 1000 and first.latency_ms >= -50
    assert first.received * 1000 >= first.timestamp_ms - 50


async def test_fan_out_to_two_groups(streammachine_harness):
    h = streammachine_harness  # the public harness: its App on the session's private server
    analytics, audit = [], []

    @h.app.agent("events", group="analytics")
    async def analyse(record):
        analytics.append(record.key)

    @h.app.agent("events", group="audit")
    async def log_it(record):
        audit.append(record.key)

    ids = await h.send("events", [{"i": i} for i in range(30)])
    await h.drain()  # both groups: every entry delivered and acknowledged
    assert analytics == ids and audit == ids


async def test_consumers_in_one_group_share_work_exactly_once(app_factory):
    app_a, app_b = app_factory("a"), app_factory("b")
    handled = {"a": [], "b": []}
    for app, label in ((app_a, "a"), (app_b, "b")):

        @app.agent("jobs", group="pool", concurrency=2, name="worker", count=5)
        async def work(record, label=label):
            handled[label].append(record.key)
            await asyncio.sleep(0)  # yield so the other consumers get reads in

    await app_a.startup()
    await app_b.startup()
    ids = []
    for _ in range(10):
        ids += await app_a.send_batch("jobs", [{"i": i} for i in range(20)])
        await asyncio.sleep(0.01)
    await wait_until(lambda: len(handled["a"]) + len(handled["b"]) >= 200, what="200 handled")
    everything = handled["a"] + handled["b"]
    assert sorted(everything) == sorted(ids)  # each exactly once
    assert handled["a"] and handled["b"]


async def test_failing_handler_is_retried_then_dead_lettered(streammachine_harness):
    h = streammachine_harness
    app = h.app
    attempts = {}

    @app.agent("payments", group="g", max_deliveries=3)
    async def pay(record):
        attempts[record.key] = attempts.get(record.key, 0) + 1
        if record.message["amount"] == "oops":
            raise ValueError(f"amount={record.message['amount']!r} is not a number")

    bad = await h.send("payments", {"amount": "oops", "user": "u1"})
    good = await h.send("payments", [{"amount": 10}, {"amount": 20}])
    await h.drain()  # until the retries are spent and the entry dead-lettered: nothing pending
    assert attempts[bad] == 3 and all(attempts[g] == 1 for g in good)
    (dead,) = await h.dead_letters("payments")
    fields = dead.message
    assert fields["amount"] == "oops" and fields["user"] == "u1"
    assert fields["_dlq_id"] == bad and fields["_dlq_deliveries"] == "3"
    assert "ValueError" in fields["_dlq_error"] and "oops" in fields["_dlq_error"]
    stats = app.stats("pay")
    await wait_until(lambda: stats.dead_lettered == 1, what="the dead letter counted (after its XADD)")
    assert stats.failed == 3 and stats.processed == 2


async def test_policies_dead_letter_at_once_and_skip(streammachine_harness):
    h = streammachine_harness
    app = h.app

    @app.agent("p1", group="g", on_error="dead_letter")
    async def at_once(record):
        raise RuntimeError("boom")

    @app.agent("p2", group="g", on_error="skip")
    async def skipper(record):
        raise RuntimeError("boom")

    await h.send("p1", {"x": 1})
    await h.send("p2", {"x": 1})
    await h.drain()
    assert len(await h.dead_letters("p1")) == 1 and app.stats("at_once").retried == 0
    assert app.stats("skipper").skipped == 1 and await h.dead_letters("p2") == []


async def test_batch_agent_receives_lists(app_factory):
    app = app_factory()
    batches = []

    @app.agent("ticks", group="g", batch=True, count=50)
    async def on_batch(messages):
        batches.append([m.message["i"] for m in messages])

    await app.startup()
    await app.send_batch("ticks", [{"i": i} for i in range(120)])
    await wait_until(lambda: sum(map(len, batches)) == 120, what="120 in batches")
    assert [i for b in batches for i in b] == [str(i) for i in range(120)]
    assert max(map(len, batches)) <= 50


async def test_sync_handler_is_supported(app_factory):
    app = app_factory()
    seen = []

    @app.agent("sync", group="g")
    def handle(record):
        seen.append(record.message["v"])

    await app.startup()
    await app.send("sync", {"v": "x"})
    await wait_until(lambda: seen == ["x"])


async def test_graceful_shutdown_acks_in_flight_work(app_factory, sync_redis):
    app = app_factory(grace_seconds=5)
    started, finished = asyncio.Event(), []

    @app.agent("slow", group="g")
    async def slow(record):
        started.set()
        await asyncio.sleep(0.3)
        finished.append(record.key)

    await app.startup()
    entry = await app.send("slow", {"x": 1})
    await asyncio.wait_for(started.wait(), 5)
    await app.shutdown()
    assert finished == [entry]
    assert sync_redis.xpending("slow", "g")["pending"] == 0


async def test_shutdown_past_grace_leaves_entry_pending_for_redelivery(app_factory, sync_redis, redis_url):
    app = app_factory(grace_seconds=0.2)
    started = asyncio.Event()

    @app.agent("stuck", group="g", name="stuck")
    async def stuck(record):
        started.set()
        await asyncio.sleep(30)

    await app.startup()
    entry = await app.send("stuck", {"x": 1})
    await asyncio.wait_for(started.wait(), 5)
    await app.shutdown()
    assert sync_redis.xpending("stuck", "g")["pending"] == 1  # not lost, not acked

    again = app_factory("again")
    redelivered = []

    @again.agent("stuck", group="g", name="stuck", claim_idle_ms=100)
    async def recover(record):
        redelivered.append(record.key)

    await again.startup()
    await wait_until(lambda: redelivered == [entry], what="redelivery by reclaim")


async def test_send_rejects_bad_values_naming_the_field(app_factory):
    app = app_factory()
    await app.redis.get_client()
    with pytest.raises(TypeError, match=r"field 'when'.*object"):
        await app.send("s", {"ok": 1, "when": object()})
    with pytest.raises(TypeError, match=r"field 'bad'"):
        await app.send_batch("s", [{"a": 1}, {"bad": {1, 2}}])
    client = await app.redis.get_client()
    assert await client.exists("s") == 0  # nothing half-written


async def test_stream_maxlen_trims(app_factory, sync_redis):
    app = app_factory(stream_maxlen=100)
    await app.redis.get_client()
    await app.send_batch("trimmed", [{"i": i} for i in range(5000)])
    assert sync_redis.xlen("trimmed") < 1000


async def test_health_check_and_status(app_factory):
    app = app_factory()

    @app.agent("h", group="g")
    async def h(record):
        pass

    @app.timer(10)
    async def t():
        pass

    await app.startup()
    health = await app.health_check()
    assert health["status"] == "healthy" and health["redis"] == "connected"
    assert health["registered_agents"] == 1 and health["registered_timers"] == 1
    assert health["active_tasks"] == 2
    status = await app.status()
    (agent,), (timer,) = status.agents, status.timers
    assert agent.name.endswith(".h") and agent.pending == 0 and agent.lag == 0 and agent.consumers is not None
    assert agent.running and timer.running and timer.name.endswith(".t") and status.redis_up
    rows = status.rows()  # the table the notebook shows, in one shape for agents and timers
    assert [row["kind"] for row in rows] == ["agent", "timer"] and rows[1]["pending"] is None
    assert status.as_dict()["agents"][0]["stream"] == "h"


async def test_unreachable_configured_server_is_a_clear_error(tmp_path):
    app = App("x", redis_url="redis://127.0.0.1:1/0")
    with pytest.raises(ConnectionError, match=r"cannot reach Redis at redis://127.0.0.1:1/0"):
        await app.startup()
    assert app.state == "failed"


async def test_hooks_run_in_order(app_factory):
    app = app_factory()
    calls = []
    app.on_startup(lambda: _record(calls, "up"))
    app.on_shutdown(lambda: _record(calls, "down"))
    await app.startup()
    assert calls == ["up"]
    await app.shutdown()
    assert calls == ["up", "down"]


async def _record(calls, what):
    calls.append(what)


async def test_misuse_fails_loudly(app_factory):
    app = app_factory()
    with pytest.raises(ValueError, match="concurrency=0"):
        app.agent("s", concurrency=0)(lambda m: None)
    with pytest.raises(ValueError, match="max_processes"):
        app.agent("s", processes=9)(lambda m: None)
    with pytest.raises(Exception, match="unknown consumer option"):
        app.agent("s", colour="red")
    await app.startup()
    with pytest.raises(AppStateError):
        await app.startup()


async def test_hot_swap_replaces_handler_without_loss(app_factory):
    app = app_factory()
    seen = {}

    @app.agent("swap", group="g", name="swappy")
    async def v1(record):
        seen[record.key] = "v1"

    await app.startup()
    first = await app.send_batch("swap", [{"i": i} for i in range(20)])
    await wait_until(lambda: len(seen) == 20)

    @app.agent("swap", group="g", name="swappy")
    async def v2(record):
        seen[record.key] = "v2"

    await wait_until(lambda: app.last_swap_ms is not None, what="swap done")
    second = await app.send_batch("swap", [{"i": i} for i in range(20)])
    await wait_until(lambda: len(seen) == 40)
    assert {seen[i] for i in first} == {"v1"} and {seen[i] for i in second} == {"v2"}
    app.unregister("swappy")
    await wait_until(lambda: "swappy" not in app._runners)


def test_start_blocks_headless_until_sigterm(redis_url, tmp_path):
    """app.start() with no running loop blocks, installs signal handlers, exits on SIGTERM."""
    import select
    import signal
    import subprocess
    import sys
    import textwrap

    script = tmp_path / "headless.py"
    script.write_text(
        textwrap.dedent(f"""
        import os, signal
        from streammachine import App
        app = App("headless", redis_url={redis_url!r})
        @app.agent("hl", group="g", block_ms=100)
        async def h(record):
            print("handled", record.message["i"], flush=True)
        @app.on_startup
        async def ready():
            await app.send("hl", {{"i": 7}})
        app.start()
        print("stopped cleanly", flush=True)
    """)
    )
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 20)
        assert ready, "the headless app handled nothing within 20s"
        assert proc.stdout.readline().strip() == "handled 7"
    except BaseException:
        proc.kill()
        raise
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0 and "stopped cleanly" in out


async def test_agent_registered_while_starting_is_started(app_factory):
    """Run-all in a notebook: the cell after app.start() registers while startup is in flight."""
    app = app_factory()
    seen = []
    startup = asyncio.get_running_loop().create_task(app.startup())
    await asyncio.sleep(0)  # startup is now in flight

    @app.agent("late", group="g")
    async def late(record):
        seen.append(record.key)

    await startup
    assert app.state == "running"
    entry = await app.send("late", {"x": 1})
    await wait_until(lambda: seen == [entry], what="the late agent consumes")


def test_rate_is_shared_by_observers():
    from streammachine.engine.specs import AgentStats

    stats = AgentStats(processed=100)
    first = stats.rate()
    stats.processed += 50
    assert stats.rate() == first  # a second observer within the window sees the same figure


async def test_shutdown_finishes_the_read_in_hand(app_factory, sync_redis):
    """Entries already read are handled and acked on shutdown, not left pending for a claim 30 s later."""
    app = app_factory(grace_seconds=5)
    started, handled = asyncio.Event(), []

    @app.agent("readbatch", group="g", count=20, start_id="0")
    async def handle(record):
        started.set()
        await asyncio.sleep(0.01)
        handled.append(record.key)

    await app.redis.get_client()
    ids = await app.send_batch("readbatch", [{"i": i} for i in range(20)])
    await app.startup()
    await asyncio.wait_for(started.wait(), 5)
    await app.shutdown()
    assert handled == ids
    assert sync_redis.xpending("readbatch", "g")["pending"] == 0


async def test_one_poison_entry_does_not_sink_its_batch(app_factory, sync_redis):
    app = app_factory()
    good = []

    @app.agent("mixed", group="g", batch=True, count=50, on_error="dead_letter")
    async def on_batch(messages):
        for m in messages:
            float(m.message["price"])  # the poison entry raises here, part-way through
        good.extend(m.message["price"] for m in messages)

    await app.startup()
    await app.send_batch("mixed", [{"price": p} for p in ("1", "2", "bad", "4")])
    await wait_until(lambda: sync_redis.xlen("mixed:dead") == 1, what="the poison entry dead-lettered")
    await wait_until(lambda: sorted(good) == ["1", "2", "4"], what="the other three handled")
    ((_, fields),) = sync_redis.xrange("mixed:dead")
    assert fields["price"] == "bad" and "could not convert" in fields["_dlq_error"]
    await wait_until(lambda: sync_redis.xpending("mixed", "g")["pending"] == 0)


async def test_threaded_sync_handler_does_not_block_the_loop(app_factory):
    import threading
    import time as _time

    app = app_factory(max_threads=2)
    threads, ticks = [], []
    release = threading.Event()

    @app.agent("blocking", group="g", threaded=True)
    def blocking(record):
        threads.append(threading.current_thread().name)
        release.wait(10)  # blocking code: would freeze the event loop if run inline

    @app.timer(0.01)
    async def heartbeat():
        ticks.append(_time.monotonic())

    await app.startup()
    await app.send("blocking", {"x": 1})
    await wait_until(lambda: threads, what="handler started in a thread")
    before = len(ticks)
    await wait_until(lambda: len(ticks) >= before + 5, what="the loop keeps running while the handler blocks")
    release.set()
    await wait_until(lambda: app.stats("blocking").processed == 1)
    assert threads[0].startswith("streammachine-") and threads[0] != threading.main_thread().name
    with pytest.raises(ValueError, match="threaded=True is for sync"):

        @app.agent("x", threaded=True)
        async def not_sync(record):
            pass


def test_headless_start_second_signal_exits_at_once(redis_url, tmp_path):
    """The first SIGTERM waits for the handler in hand (grace 60 s); a second one exits at once (128 + 15)."""
    import signal
    import subprocess
    import sys
    import textwrap

    import redis as redis_sync

    script = tmp_path / "stuck.py"
    script.write_text(
        textwrap.dedent(f"""
        import asyncio
        from streammachine import App
        app = App("stuck", redis_url={redis_url!r}, grace_seconds=60)
        @app.agent("st", group="g", block_ms=100)
        async def h(record):
            client = await app.redis.get_client()
            await client.set("in_hand", 1)
            await asyncio.sleep(120)
        @app.on_startup
        async def ready():
            await app.send("st", {{"i": 1}})
        app.start()
    """)
    )
    client = redis_sync.Redis.from_url(redis_url)
    proc = subprocess.Popen([sys.executable, str(script)])
    try:
        wait_until_sync(lambda: client.get("in_hand"), 20, what="the handler in hand")
        proc.send_signal(signal.SIGTERM)
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(1)  # the first signal waits for the handler (grace 60 s)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 128 + signal.SIGTERM
    finally:
        proc.kill()
        client.close()
