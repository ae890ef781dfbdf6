"""App.start()/stop(): one return type wherever they are called, calls in order, one App per name."""

from __future__ import annotations

import asyncio
import logging
import threading
import warnings

import pytest

from streammachine import App
from streammachine.app import running_apps, stop_all
from streammachine.engine.lifecycle import Transition
from tests.helpers import wait_until


async def test_stop_is_awaitable_in_every_state(app_factory):
    app = app_factory()
    assert await app.stop() == "idle"  # never started: nothing to do, still awaitable (was a TypeError)
    assert await app.start() == "running"
    assert app.state == "running"
    assert await app.stop() == "stopped"
    assert await app.stop() == "stopped"  # a second stop: nothing to do, no TypeError
    assert "not running (stopped)" in repr(app.stop())


async def test_stop_then_start_in_one_cell_leaves_the_app_running(app_factory):
    app = app_factory()
    seen = []

    @app.agent("restart", group="g")
    async def handle(record):
        seen.append(record.key)

    await app.start()
    first, second = app.stop(), app.start()  # no await in between, as in one notebook cell
    assert isinstance(first, Transition) and isinstance(second, Transition)
    assert await second == "running"
    assert first.done() and app.state == "running"
    entry = await app.send("restart", {"x": 1})
    await wait_until(lambda: seen == [entry], what="the restarted app consumes")
    third, fourth = app.start(), app.stop()  # and the other way round
    await fourth
    assert app.state == "stopped" and third.done()


async def test_start_on_a_running_app_says_so_once_without_a_traceback(app_factory, caplog):
    app = app_factory()
    await app.start()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="streammachine"):
        again = app.start()
        await asyncio.sleep(0.05)  # let any background task fail, if one were scheduled
    assert again.done() and await again == "running"
    assert "already running" in repr(again)
    problems = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(problems) == 1 and problems[0].levelno == logging.WARNING, caplog.text
    assert "already running" in problems[0].getMessage() and problems[0].exc_info is None


async def test_failed_start_leaves_the_app_failed_and_is_raised_to_whoever_awaits(caplog):
    app = App("unreachable", redis_url="redis://127.0.0.1:1/0")
    with pytest.raises(ConnectionError, match="cannot reach Redis"):
        await app.start()
    assert app.state == "failed"
    health = await app.health_check()
    assert health["status"] == "degraded" and health["state"] == "failed"
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], "awaited: the caller saw it, no log"

    caplog.clear()
    unawaited = app.start()  # a failed app may be started again; nobody awaits this one
    await wait_until(lambda: unawaited.done(), what="the second attempt to fail")
    await wait_until(lambda: any(r.levelno >= logging.ERROR for r in caplog.records), what="the failure logged")
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and errors[0].exc_info is None and "ConnectionError" in errors[0].getMessage()
    assert app.state == "failed" and "start failed: ConnectionError" in repr(unawaited)


async def test_stop_from_a_thread_without_a_loop_blocks_until_stopped(app_factory):
    app = app_factory()
    await app.start()
    outcome = []
    thread = threading.Thread(target=lambda: outcome.append((app.stop(), app.state)))
    thread.start()
    await wait_until(lambda: outcome, what="stop() to return in the thread")
    transition, state_then = outcome[0]
    assert state_then == "stopped" and transition.done() and transition.result() == "stopped"
    thread.join()


async def test_a_new_app_of_the_same_name_replaces_the_running_one(app_factory, sync_redis):
    first = app_factory("same")
    handled = []

    @first.agent("replaced", group="g", name="worker")
    async def old(record):
        handled.append(("old", record.key))

    await first.start()
    assert first in running_apps()
    second = app_factory("same")  # a re-run `app = App("same")` cell
    await wait_until(lambda: first.state == "stopped", what="the earlier app to stop")

    @second.agent("replaced", group="g", name="worker")
    async def new(record):
        handled.append(("new", record.key))

    await second.start()
    entry = await second.send("replaced", {"x": 1})
    await wait_until(lambda: handled == [("new", entry)], what="only the new app consumes")
    assert [app.name for app in running_apps()].count("same") == 1
    consumers = {c["name"] for c in sync_redis.xinfo_consumers("replaced", "g")}
    assert len(consumers) == 1, "the new app took over the same consumer name"


async def test_stop_all_reaches_every_app_of_the_process(app_factory):
    others = running_apps()  # an App another test of this process left running counts too: it is in the process
    apps = [app_factory(name) for name in ("a", "b", "c")]
    for app in apps[:2]:
        await app.start()
    assert [app.name for app in running_apps() if app not in others] == ["a", "b"]
    transitions = stop_all()
    assert len(transitions) == 2 + len(others)
    assert {await t for t in transitions} == {"stopped"}
    assert running_apps() == []


def test_no_op_parameters_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        App("quiet")  # the defaults say nothing
    with pytest.warns(DeprecationWarning, match="to_scan"):
        App("scan", to_scan=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        app = App("dash", dashboard_enabled=True)  # the web dashboard exists now: no warning
    assert app.dashboard_enabled and app.dashboard_port == 8000
