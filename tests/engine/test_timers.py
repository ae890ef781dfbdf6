"""Timers: fixed rate without drift, no overlap, failures survived."""

import asyncio
import time

from tests.helpers import wait_until


async def test_fixed_rate_without_drift(app_factory):
    app = app_factory()
    stamps = []

    @app.timer(0.05)
    async def tick():
        stamps.append(time.monotonic())
        await asyncio.sleep(0.02)  # work inside the period must not push the schedule back

    await app.startup()
    await wait_until(lambda: len(stamps) >= 21, what="21 ticks")
    await app.shutdown()
    intervals = [b - a for a, b in zip(stamps, stamps[1:])]
    mean_period = (stamps[20] - stamps[0]) / 20
    assert abs(mean_period - 0.05) < 0.01, mean_period  # a drifting timer would be ~0.07
    assert min(intervals) > 0.02


async def test_overrunning_timer_never_overlaps_and_skips_missed_ticks(app_factory):
    app = app_factory()
    running, overlaps, starts = [0], [0], []

    @app.timer(0.02)
    async def slow():
        starts.append(time.monotonic())
        running[0] += 1
        overlaps[0] = max(overlaps[0], running[0])
        await asyncio.sleep(0.07)
        running[0] -= 1

    await app.startup()
    await wait_until(lambda: len(starts) >= 4)
    await app.shutdown()
    assert overlaps[0] == 1
    assert all(b - a >= 0.07 for a, b in zip(starts, starts[1:]))


async def test_failing_timer_logs_and_keeps_schedule(app_factory, caplog):
    app = app_factory()
    calls = []

    @app.timer(0.02, name="flaky")
    def flaky():
        calls.append(1)
        if len(calls) % 2:
            raise RuntimeError("transient")

    await app.startup()
    await wait_until(lambda: len(calls) >= 5)
    spec = app.timers["flaky"]
    assert spec.failures >= 2 and spec.runs >= 2 and "RuntimeError: transient" in spec.last_error
    assert "timer flaky: failed (RuntimeError: transient)" in caplog.text


async def test_timer_hot_swap(app_factory):
    app = app_factory()
    seen = []

    @app.timer(0.02, name="t")
    async def v1():
        seen.append("v1")

    await app.startup()
    await wait_until(lambda: "v1" in seen)

    @app.timer(0.02, name="t")
    async def v2():
        seen.append("v2")

    await wait_until(lambda: seen[-3:] == ["v2"] * 3, what="v2 running alone")


async def test_rerunning_a_timer_cell_keeps_its_counters(app_factory):
    """Regression: re-registering a timer reset its runs and failures, while an agent's counters carried over."""
    app = app_factory()
    calls = []

    @app.timer(0.02, name="counted")
    def first():
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("once")

    await app.startup()
    await wait_until(lambda: app.timers["counted"].runs >= 3, what="three good runs")
    before = app.timers["counted"]
    runs, failures = before.runs, before.failures
    assert failures == 1

    @app.timer(0.02, name="counted")
    def second():
        calls.append(2)

    after = app.timers["counted"]
    assert after.handler is second
    assert after.runs >= runs and after.failures == failures == 1, "the counters carried over"
    assert after.last_error == "RuntimeError: once"
    await wait_until(lambda: after.runs > runs and 2 in calls, what="the new body counted on top")
