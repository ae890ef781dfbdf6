"""Prometheus metrics from a running App: the collector, and a real HTTP scrape of a live app."""

from __future__ import annotations

import asyncio

import httpx
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from streammachine.embedded import free_port
from streammachine.headless.metrics import (
    DirectorySource,
    LiveSource,
    registry_for,
    serve_metrics,
    snapshot,
    write_snapshot,
)
from tests.helpers import wait_until


def samples_of(text: str) -> dict:
    """{(name, sorted labels): value} of a Prometheus text exposition."""
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def _value(samples: dict, name: str, **labels) -> float:
    matches = [
        v for (n, ls), v in samples.items() if n == name and all(dict(ls).get(k) == x for k, x in labels.items())
    ]
    assert matches, f"no sample {name} {labels} in {sorted(k[0] for k in samples)}"
    return sum(matches)


async def _flaky_app(app_factory):
    app = app_factory("metrics")

    @app.agent("orders", group="billing")
    async def bill(record):
        await asyncio.sleep(0.005)
        if record.message.get("bad"):
            raise ValueError("cannot bill")

    @app.timer(0.05)
    async def tick():
        pass

    await app.startup()
    for i in range(7):
        await app.send("orders", {"n": i})
    await app.send("orders", {"bad": 1})
    stats = app.stats("bill")
    await wait_until(lambda: stats.processed == 7 and stats.dead_lettered == 1, 10, what="7 handled, 1 dead-lettered")
    return app


async def test_collector_reports_counters_latency_pending_and_lag(app_factory):
    app = await _flaky_app(app_factory)
    snap = await snapshot(app)
    samples = samples_of(generate_latest(registry_for(lambda: [snap])).decode())
    labels = dict(agent=f"{__name__}._flaky_app.<locals>.bill", stream="orders", group="billing", worker="0")
    assert _value(samples, "streammachine_messages_processed_total", **labels) == 7
    assert _value(samples, "streammachine_messages_failed_total", **labels) == 3  # FAST: max_deliveries=3
    assert _value(samples, "streammachine_messages_retried_total", **labels) == 2
    assert _value(samples, "streammachine_messages_dead_lettered_total", **labels) == 1
    assert _value(samples, "streammachine_handler_seconds_count", **labels) == 10
    assert _value(samples, "streammachine_handler_seconds_sum", **labels) >= 10 * 0.005
    assert _value(samples, "streammachine_group_pending", stream="orders", group="billing") == 0
    assert _value(samples, "streammachine_group_lag", stream="orders", group="billing") == 0
    assert _value(samples, "streammachine_group_consumers", stream="orders", group="billing") == 1
    assert _value(samples, "streammachine_timer_runs_total", timer=f"{__name__}._flaky_app.<locals>.tick") >= 1
    assert _value(samples, "streammachine_redis_up") == 1
    assert _value(samples, "streammachine_workers") == 1


async def test_live_scrape_over_http_sees_new_work(app_factory):
    app = await _flaky_app(app_factory)
    server = serve_metrics(LiveSource(app, asyncio.get_running_loop()), free_port())
    url = f"http://127.0.0.1:{server.server_port}/metrics"
    try:
        scrape = lambda: samples_of(httpx.get(url, timeout=5).text)  # noqa: E731
        samples = await asyncio.to_thread(scrape)
        assert _value(samples, "streammachine_messages_processed_total") == 7
        await app.send("orders", {"n": 99})

        async def counted():
            return _value(await asyncio.to_thread(scrape), "streammachine_messages_processed_total") == 8

        await wait_until(counted, 10, what="the scrape to count the new entry")
    finally:
        server.shutdown()


async def test_directory_source_sums_workers_and_keeps_the_freshest_group(app_factory, tmp_path):
    app = await _flaky_app(app_factory)
    first = await snapshot(app, "0")
    second = await snapshot(app, "1")
    second.update(time=first["time"] + 1, agents=[dict(first["agents"][0], pending=5, lag=2)])
    write_snapshot(tmp_path, first)
    write_snapshot(tmp_path, second)
    (tmp_path / "worker-9.json").write_text("{half a fi")  # being rewritten: skipped, not an error
    samples = samples_of(generate_latest(registry_for(DirectorySource(tmp_path))).decode())
    assert _value(samples, "streammachine_messages_processed_total") == 14
    assert _value(samples, "streammachine_messages_processed_total", worker="1") == 7
    assert _value(samples, "streammachine_group_pending", stream="orders") == 5, "the newer report wins"
    assert _value(samples, "streammachine_workers") == 2


async def test_redis_outage_reads_as_redis_up_0_not_a_failed_scrape(app_factory):
    app = app_factory("idle")

    @app.agent("orders", group="billing")
    async def bill(record):
        pass

    snap = await snapshot(app)  # not running: no Redis needed, no groups
    samples = samples_of(generate_latest(registry_for(lambda: [snap])).decode())
    assert _value(samples, "streammachine_redis_up") == 0
    assert _value(samples, "streammachine_messages_processed_total") == 0

    def broken():
        raise TimeoutError("loop busy")

    samples = samples_of(generate_latest(registry_for(broken)).decode())
    assert _value(samples, "streammachine_workers") == 0


async def test_a_server_that_went_away_reads_as_redis_up_0(app_factory, private_server):
    """Regression: the group reader swallowed every error, so a running app whose server was gone still
    reported redis_up 1 (with no groups)."""
    app = app_factory("outage", url=private_server.url)

    @app.agent("orders", group="billing")
    async def bill(record):
        pass

    await app.startup()
    before = await snapshot(app)
    assert before["redis_up"] and [(a["group"], a["pending"]) for a in before["agents"]] == [("billing", 0)]
    private_server.stop()
    after = await snapshot(app)
    assert after["redis_up"] is False and [a["pending"] for a in after["agents"]] == [None]
