"""The public test harness: an App on a private server, send, drain, faults, the pytest fixture, bounded runs."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pydantic
import pytest
import redis

from streammachine import App, Message
from streammachine.testing import FAST, DrainTimeout, Harness, Ledger, Producer, seq_of
from tests.helpers import wait_until


class Order(pydantic.BaseModel):
    item: str
    qty: int


def billing_app() -> App:
    """A small pipeline as a user would write it: orders -> invoices."""
    app = App("billing", consumer_config=FAST)

    @app.agent("orders", group="billing")
    async def bill(order: Order, record: Message):
        await app.send("invoices", {"order": record.key, "total": 12.5 * order.qty})

    return app


async def test_harness_runs_a_users_app_on_a_private_server_and_drains_it():
    app = billing_app()
    async with Harness(app) as h:
        assert app.redis.url == h.url and h.server.is_running()
        ids = await h.send("orders", [Order(item="book", qty=2), {"item": "pen", "qty": "4"}])
        await h.drain(timeout=10)
        invoices = await h.messages("invoices")
        assert [(m.message["order"], float(m.message["total"])) for m in invoices] == [(ids[0], 25.0), (ids[1], 50.0)]
        server = h.server
    assert not server.is_running(), "the harness stops the server it started"
    assert app.state == "stopped"


async def test_drain_waits_for_retries_and_dead_letters():
    app = App("flaky", consumer_config=FAST)
    attempts = []

    @app.agent("jobs", group="g")
    async def work(record: Message):
        attempts.append(record.message["n"])
        if record.message["n"] == "bad" or attempts.count(record.message["n"]) == 1:
            raise RuntimeError("first attempt fails")

    async with Harness(app) as h:
        await h.send("jobs", [{"n": "1"}, {"n": "bad"}])
        await h.drain(timeout=15)
        assert attempts.count("1") == 2 and attempts.count("bad") == FAST.max_deliveries
        (dead,) = await h.dead_letters("jobs")
        assert dead.message["n"] == "bad" and "first attempt fails" in dead.message["_dlq_error"]


async def test_drain_timeout_says_what_is_left():
    gate = asyncio.Event()
    h = Harness()

    @h.app.agent("slow", group="g", name="slow")
    async def slow(record):
        await gate.wait()

    async with h:
        await h.send("slow", {"a": 1})
        with pytest.raises(DrainTimeout, match=r"slow/g: pending 1"):
            await h.drain("slow", timeout=0.5)
        gate.set()
        await h.drain(slow, timeout=10)


async def test_kill_consumer_then_restart_agent_loses_nothing(tmp_path):
    """The fault helper kills the consumer mid-entry; new consumers under the same names take the entry back."""
    ledger = Ledger(tmp_path / "handled")
    inside = asyncio.Event()
    release = asyncio.Event()
    h = Harness()

    @h.app.agent("jobs", group="g", name="work")
    async def work(record):
        if seq_of(record) == 3 and not release.is_set():
            inside.set()
            await asyncio.Event().wait()  # hangs until the consumer is killed
        ledger.record(seq_of(record))

    async with h:
        producer = Producer(h.app, "jobs", batch=5, interval=0)
        await producer.send(10)
        await wait_until(inside.is_set, what="the handler in entry 3")
        killed = await h.kill_consumer("work")
        assert killed.cancelled()
        with pytest.raises(DrainTimeout):
            await h.drain("work", timeout=0.3)  # entry 3 is pending with a dead consumer
        release.set()
        h.restart_agent("work")
        await h.drain("work", timeout=10)
    assert producer.confirmed <= set(ledger.counts()), "every confirmed record handled"


async def test_restart_server_and_stall_under_load_lose_nothing(tmp_path):
    ledger = Ledger(tmp_path / "handled")
    h = Harness()

    @h.app.agent("jobs", group="g", name="work")
    async def work(record):
        ledger.record(seq_of(record))

    async with h:
        producer = Producer(h.app, "jobs", batch=10, interval=0.005)
        sending = asyncio.ensure_future(producer.send(400))
        await wait_until(lambda: ledger.unique() >= 50, what="some handled before the restart")
        await h.restart_server()
        await wait_until(lambda: ledger.unique() >= 150 or sending.done(), timeout=30, what="progress after restart")
        probe = redis.asyncio.Redis.from_url(h.url, socket_timeout=0.3)
        async with h.stalled():
            with pytest.raises(redis.exceptions.TimeoutError):
                await probe.ping()  # frozen: nothing answers while the producer and consumer wait
        assert await probe.ping()
        await probe.aclose()
        await sending
        await h.drain(timeout=30)
    assert producer.confirmed <= set(ledger.counts())


async def test_pytest_fixture_gives_a_harness_on_the_session_server(streammachine_harness, streammachine_server):
    h = streammachine_harness
    seen = []

    @h.app.agent("events", group="g")
    async def record(message):
        seen.append(message.message["x"])

    await h.send("events", {"x": "1"})  # starts the harness on first use
    await h.drain()
    assert seen == ["1"] and h.url == streammachine_server.url


async def test_pytest_fixture_starts_each_test_with_an_empty_server(streammachine_harness):
    assert await (await streammachine_harness.client()).dbsize() == 0


async def test_app_run_stops_after_count_or_timeout(redis_url, sync_redis):
    app = App("bounded", redis_url=redis_url, consumer_config=FAST.replace(start_id="0"))

    @app.agent("work", group="g")
    async def work(record): ...

    for i in range(30):
        sync_redis.xadd("work", {"i": i})
    handled = await app.run(count=10, timeout=30)
    assert handled >= 10 and app.state == "stopped"
    assert await App("idle", redis_url=redis_url).run(timeout=0.2) == 0


def test_plugin_module_imports_nothing_of_streammachine():
    """pytest loads entry-point plugins in every run: this one must not import the package until a fixture is used."""
    code = "import sys, streammachine_pytest; print(sorted(m for m in sys.modules if m.startswith('streammachine')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['streammachine_pytest']"
