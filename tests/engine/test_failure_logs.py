"""Handler failures on a fast stream: a bounded number of log lines, counts that add up, the first at once."""

from __future__ import annotations

import logging
import math
import time

import pytest

from streammachine import ConsumerConfig
from streammachine.engine.lograte import FailureLog
from tests.helpers import wait_until

INTERVAL = 0.3


@pytest.fixture
def failure_records(monkeypatch):
    monkeypatch.setenv("STREAMMACHINE_FAILURE_LOG_INTERVAL", str(INTERVAL))
    records: list = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    keep = Keep(logging.WARNING)
    logger = logging.getLogger("streammachine.engine")
    logger.addHandler(keep)
    yield records
    logger.removeHandler(keep)


def _about(records: list, key: str) -> list:
    return [r for r in records if r.getMessage().startswith(key + ":")]


@pytest.mark.parametrize("policy", ["skip", "retry"])
async def test_a_failing_handler_on_a_fast_stream_logs_a_bounded_summary(app_factory, failure_records, policy):
    config = ConsumerConfig(count=200, block_ms=100, retry_delay_ms=0, max_deliveries=3, on_error=policy)
    app = app_factory("flood", consumer_config=config)
    calls: list = []

    @app.agent("flood:in", name="broken")
    def broken(message):
        calls.append(time.time())
        raise ValueError(f"bad entry {message.id}")

    await app.startup()
    started = time.monotonic()
    entries = 3000 if policy == "skip" else 1000
    await app.send_batch("flood:in", [{"n": i} for i in range(entries)])
    stats = app.stats("broken")
    expected = entries * (1 if policy == "skip" else 3)
    settled = (lambda: stats.skipped == entries) if policy == "skip" else (lambda: stats.dead_lettered == entries)
    await wait_until(lambda: stats.failed >= expected and settled(), 60, what=f"{expected} failures")
    await app.shutdown()
    elapsed = time.monotonic() - started

    lines = _about(failure_records, "agent broken")
    first = lines[0]
    assert first.failures == 1 and "ValueError: bad entry" in first.getMessage()
    assert first.created <= calls[1], "the first failure is logged at once, before the next one happens"
    # one line per interval (and one when the agent stops), not one per failure
    assert len(lines) <= 2 + math.ceil(elapsed / INTERVAL), [r.getMessage() for r in lines]
    assert sum(r.failures for r in lines) == stats.failed == expected
    summaries = lines[1:]
    assert summaries and all("more failure(s)" in r.getMessage() and "last: entry" in r.getMessage() for r in summaries)


async def test_a_failing_timer_logs_once_per_interval_with_a_count(app_factory, failure_records):
    app = app_factory("flood-timer")
    runs: list = []

    @app.timer(0.005, name="tick")
    def tick():
        runs.append(1)
        raise RuntimeError("timer bug")

    await app.startup()
    started = time.monotonic()
    await wait_until(lambda: len(runs) >= 150, 20, what="150 failed runs")
    await app.shutdown()
    elapsed = time.monotonic() - started
    lines = _about(failure_records, "timer tick")
    assert lines[0].exc_info is not None, "the first failure keeps its traceback"
    assert len(lines) <= 2 + math.ceil(elapsed / INTERVAL)
    assert sum(r.failures for r in lines) == app.timers["tick"].failures == len(runs)


def test_summaries_without_a_loop_come_on_the_next_failure_and_on_flush():
    logger = logging.getLogger("test.lograte")
    records: list = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger.addHandler(Keep())
    logger.propagate = False
    try:
        aggregator = FailureLog(logger, interval=0.05)
        for i in range(100):
            aggregator.record("agent a", logging.WARNING, "retried", "entry %d failed", i)
        aggregator.record("agent b", logging.ERROR, "dead-lettered", "entry x failed")
        assert [r.failures for r in records] == [1, 1]
        deadline = time.monotonic() + 0.05
        while time.monotonic() < deadline:  # the interval passes with no loop to run a flush
            pass
        aggregator.record("agent a", logging.ERROR, "dead-lettered", "entry last failed")
        assert records[-1].failures == 99 and records[-1].levelno == logging.WARNING
        assert "last: entry 99 failed" in records[-1].getMessage()
        aggregator.flush()
        assert records[-1].failures == 1 and "dead-lettered 1" in records[-1].getMessage()
        assert sum(r.failures for r in records) == 102
        zero = FailureLog(logger, interval=0)
        before = len(records)
        for _ in range(5):
            zero.record("agent c", logging.WARNING, "retried", "x")
        assert len(records) == before + 5
    finally:
        logger.propagate = True
