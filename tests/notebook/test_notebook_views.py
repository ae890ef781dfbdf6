"""Live views and the dashboard, fed by real agents on a real server.

These run on the test's event loop, which plays the kernel's loop: the
views' refresh tasks and the agents share it exactly as they do in a
kernel (the kernel tests show the same in a real ipykernel).
"""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from streammachine import ConsumerConfig, TimeSeriesBuffer, create_ohlc_aggregator
from streammachine.notebook import LiveView, live_candles, live_line, live_table
from tests.helpers import wait_until


@pytest.fixture
def views():
    made = []
    yield made
    for view in made:
        view.close()


async def test_live_line_follows_the_buffer_in_a_bounded_window_at_a_bounded_rate(app_factory, views):
    app = app_factory("line")
    buffer = TimeSeriesBuffer(max_age_seconds=3600)

    @app.agent("samples", group="g")
    async def collect(message):
        buffer.append({"timestamp_ms": message.timestamp_ms, "value": float(message.message["v"])})

    await app.start()
    view = live_line(buffer, y="value", window=20, fps=10)
    views.append(view)
    began = time.monotonic()
    await app.send_batch("samples", [{"v": v} for v in range(50)])
    await wait_until(
        lambda: view.figure.data[0].y is not None and view.figure.data[0].y[-1] == 49.0,
        5,
        what="the chart to show the last sample",
    )
    trace = view.figure.data[0]
    assert list(trace.y) == [float(v) for v in range(30, 50)]
    assert np.issubdtype(np.asarray(trace.x).dtype, np.datetime64) and len(trace.x) == 20
    assert view.frames <= 10 * (time.monotonic() - began) + 2

    frames = view.frames
    skipped = view.skipped
    await wait_until(lambda: view.skipped >= skipped + 3, 5, what="frames skipped while nothing changes")
    assert view.frames == frames  # no new data, no redraw

    await app.send("samples", {"v": 50})
    await wait_until(lambda: view.figure.data[0].y[-1] == 50.0, 5, what="the next sample")
    assert view.frames == frames + 1


async def test_closing_the_widget_or_the_view_stops_updates(app_factory, views):
    buffer = TimeSeriesBuffer(max_age_seconds=3600)
    buffer.append({"timestamp_ms": 1, "value": 1.0})
    by_widget = live_line(buffer, y="value", fps=30)
    by_view = live_line(buffer, y="value", fps=30)
    views.extend([by_widget, by_view])
    assert by_widget.running and by_view.running and by_widget.frames == 1

    by_widget.figure.close()  # what closing the widget from the notebook does
    by_view.close()
    await wait_until(lambda: not by_widget.running and not by_view.running, 2, what="refresh tasks to end")
    buffer.append({"timestamp_ms": 2, "value": 2.0})
    assert by_widget.refresh() is True  # data did change: only the loop stopped
    assert by_view.closed and by_widget.closed
    # close() takes down the box it displays in, then the figure (see close_tree)
    assert by_view.widget.comm is None and by_view.figure.comm is None


async def test_a_slow_redraw_never_takes_more_than_half_the_loop(views):
    class Slow(LiveView):
        def __init__(self):
            super().__init__(widget=None, fps=60)
            self.n = 0

        def _version(self):
            self.n += 1
            return self.n

        def _render(self):
            time.sleep(0.02)  # a deliberately blocking 20 ms redraw

    view = Slow().start()
    views.append(view)
    began = time.monotonic()
    await wait_until(lambda: view.frames >= 15, 5, what="15 slow frames")
    busy = view.frames * 0.02 / (time.monotonic() - began)
    assert busy <= 0.6, f"redraws took {busy:.0%} of the loop"


async def test_live_candles_show_candles_from_ticks_even_after_flush(app_factory, views):
    app = app_factory("candles")
    agg = create_ohlc_aggregator(intervals=[1000, 5000])

    @app.agent("ticks", group="ohlc", batch=True)
    async def aggregate(messages):
        for m in messages:
            f = m.message
            agg.update_tick(f["symbol"], float(f["price"]), float(f["volume"]), int(f["ts"]))

    await app.start()
    view = live_candles(agg, "ABC", 1000, window=3, fps=20)
    views.append(view)
    # three 1 s candles with known open/high/low/close
    ticks = [(0, 10), (400, 12), (900, 9), (1000, 20), (1500, 25), (2000, 5), (2999, 7)]
    await app.send_batch("ticks", [{"symbol": "ABC", "price": p, "volume": 1, "ts": t} for t, p in ticks])
    await wait_until(
        lambda: view.figure.data[0].close is not None and len(view.figure.data[0].close) == 3,
        5,
        what="three candles on the chart",
    )
    trace = view.figure.data[0]
    assert list(trace.open) == [10, 20, 5] and list(trace.high) == [12, 25, 7]
    assert list(trace.low) == [9, 20, 5] and list(trace.close) == [9, 25, 7]

    agg.flush_interval("ABC", 1000)  # a pipeline emits and flushes completed candles
    await app.send("ticks", {"symbol": "ABC", "price": 30, "volume": 1, "ts": 3100})
    await wait_until(lambda: list(view.figure.data[0].close) == [25, 7, 30], 5, what="the new candle (window 3)")
    assert list(view.figure.data[0].open) == [20, 5, 30]
    with pytest.raises(ValueError, match="interval_ms=60000: not one of the aggregator's intervals"):
        live_candles(agg, "ABC", 60000)


async def test_dashboard_shows_throughput_pending_lag_and_errors(app_factory):
    app = app_factory("dash")

    @app.agent("jobs", group="workers", on_error="dead_letter")
    async def work(message):
        if message.message["n"] == "13":
            raise ValueError("unlucky 13")

    dashboard = app.dashboard()
    try:
        assert "dash" in dashboard.header.value and "idle" in dashboard.header.value
        await app.start()
        await app.send_batch("jobs", [{"n": n} for n in range(40)])
        await wait_until(
            lambda: any(r["processed"] == 39 and r["pending"] == 0 and r["lag"] == 0 for r in dashboard.rows),
            5,
            what="the dashboard rows to catch up",
        )
        await wait_until(lambda: "unlucky 13" in dashboard.table.value, 5, what="the error in the table")
        await wait_until(
            lambda: dashboard.chart.data and max(dashboard.chart.data[0].y) > 0, 5, what="throughput on the chart"
        )
        assert dashboard.chart.data[0].name.endswith(".work")
        assert "running" in dashboard.header.value
    finally:
        dashboard.close()
    assert dashboard.closed and dashboard.chart.comm is None and dashboard.table.comm is None


def test_bad_view_arguments_are_named():
    buffer = TimeSeriesBuffer(max_age_seconds=10)
    with pytest.raises(ValueError, match="fps=0: expected a number > 0"):
        live_line(buffer, y="v", fps=0)
    with pytest.raises(ValueError, match="window=-5"):
        live_line(buffer, y="v", window=-5)
    with pytest.raises(ValueError, match="y=\\[\\]"):
        live_line(buffer, y=[])
    with pytest.raises(RuntimeError, match="running event loop"):
        live_line(buffer, y="v")  # no loop here: say so instead of silently never drawing


async def test_a_missing_column_is_reported_and_the_view_keeps_going(views):
    buffer = TimeSeriesBuffer(max_age_seconds=3600)
    view = live_line(buffer, y="price", fps=30)
    views.append(view)
    buffer.append({"timestamp_ms": 1, "value": 1.0})
    await wait_until(lambda: view.errors >= 1, 2, what="the failed redraw")
    assert "['price'] not in the buffer" in view.last_error and view.running


async def test_live_table_shows_committed_rows_sorted_and_bounded_redrawn_only_on_commits(app_factory, views):
    app = app_factory("tables", consumer_config=ConsumerConfig(count=100, block_ms=50, on_error="dead_letter"))
    totals = app.table("customer_totals")
    in_hand = asyncio.Event()
    release = asyncio.Event()

    @app.agent("orders", group="g", output="orders:out", tables=[totals])
    async def add(message):
        order = message.message
        row = totals.get(order["customer"]) or {"orders": 0, "amount": 0}
        totals[order["customer"]] = {"orders": row["orders"] + 1, "amount": row["amount"] + int(order["amount"])}
        if order.get("hold"):  # a write in progress, not committed while the handler waits
            in_hand.set()
            await release.wait()
        if order.get("poison"):
            raise ValueError("poison")
        return order

    await app.start()
    view = live_table(totals, max_rows=3, fps=20)
    views.append(view)
    assert view.frames == 1 and view.keys == 0 and "no keys yet" in view.body.value
    began = time.monotonic()
    customers = ["eve", "bob", "dan", "alice", "carol"]
    await app.send_batch("orders", [{"customer": c, "amount": 10 * (i + 1)} for i, c in enumerate(customers * 2)])
    await wait_until(lambda: view.frame.get("orders", {}).get("alice") == 2, 5, what="the view to show both rounds")
    assert list(view.frame.index) == ["alice", "bob", "carol"]  # the first max_rows keys, sorted
    assert view.frame.to_dict("index") == {
        "alice": {"orders": 2, "amount": 40 + 90},
        "bob": {"orders": 2, "amount": 20 + 70},
        "carol": {"orders": 2, "amount": 50 + 100},
    }
    assert view.frame.equals(totals.to_dataframe().sort_index().head(3))  # the shape to_dataframe() gives
    assert view.keys == 5 and "5 keys" in view.header.value and "first 3 by key" in view.header.value
    assert "<td>130</td>" in view.body.value
    assert view.frames <= 20 * (time.monotonic() - began) + 2

    frames, skipped = view.frames, view.skipped
    await wait_until(lambda: view.skipped >= skipped + 3, 5, what="frames skipped while nothing is committed")
    assert view.frames == frames

    await app.send_batch("orders", [{"customer": "alice", "amount": 1, "hold": 1}])
    await wait_until(in_hand.is_set, 5, what="the handler holding its write")
    view.refresh(force=True)
    assert view.frame.loc["alice", "amount"] == 130, "the view showed a write that was not committed"
    release.set()
    await wait_until(lambda: view.frame.loc["alice", "amount"] == 131, 5, what="the commit on screen")
    assert view.frames == frames + 2  # the forced redraw and the commit

    await app.send("orders", {"customer": "aaron", "amount": 5, "poison": 1})  # its write is discarded
    await wait_until(lambda: app.stats("add").dead_lettered == 1, 5, what="the poison order dead-lettered")
    await app.send("orders", {"customer": "bob", "amount": 1})
    await wait_until(lambda: view.frame.loc["bob", "amount"] == 91, 5, what="the next commit")
    assert "aaron" not in view.frame.index and view.keys == 5

    view.close()
    await wait_until(lambda: not view.running, 2, what="the refresh task to end")
    assert view.header.comm is None and view.body.comm is None


async def test_live_table_drops_keys_whose_ttl_ran_out(app_factory, views):
    app = app_factory("ttl")
    seen = app.table("recent", default=0, ttl=0.5)

    @app.agent("visits", group="g", tables=[seen])
    async def visit(message):
        seen[message.message["page"]] += 1

    await app.start()
    view = live_table(seen, fps=20)
    views.append(view)
    await app.send_batch("visits", [{"page": "home"}, {"page": "home"}, {"page": "about"}])
    await wait_until(lambda: view.frame.get("value", {}).get("home") == 2, 5, what="the counts on screen")
    assert view.keys == 2
    await wait_until(lambda: view.keys == 0, 5, what="the keys to expire from the view")
    assert "no keys yet" in view.body.value


def test_bad_live_table_arguments_are_named(app_factory):
    table = app_factory("bad").table("t")
    with pytest.raises(TypeError, match="expected a table from app.table"):
        live_table({"a": 1})
    with pytest.raises(ValueError, match="max_rows=0: expected a number > 0"):
        live_table(table, max_rows=0)
    with pytest.raises(ValueError, match="max_rows=2.5: expected an int > 0"):
        live_table(table, max_rows=2.5)
    with pytest.raises(ValueError, match="fps=-1"):
        live_table(table, fps=-1)
    with pytest.raises(RuntimeError, match="running event loop"):
        live_table(table)


async def test_live_window_plots_rows_per_key_and_keeps_them_across_a_re_run(app_factory, views):
    from streammachine.notebook import live_window
    from streammachine.windows import Count, Sum, Window

    app = app_factory("windows")
    w = Window.tumbling(100, key="symbol", time="ts").agg(n=Count(), qty=Sum("qty"))

    def define():  # the cell that defines the window
        @app.agent("ticks", group="g", window=w, output="bars", name="bars")
        def bars(rows):
            return rows

    define()
    await app.start()
    view = live_window(app, "bars", y="qty", kind="bars", fps=20)
    views.append(view)
    assert view.frames == 1 and not view.figure.data
    ticks = [{"symbol": s, "qty": q, "ts": t} for s, q, t in [("A", 1, 10), ("B", 2, 20), ("A", 3, 30)]]
    await app.send_batch("ticks", ticks)
    await app.send_batch("ticks", [{"symbol": "A", "qty": 5, "ts": 110}, {"symbol": "B", "qty": 7, "ts": 120}])
    await wait_until(lambda: len(view.figure.data) == 2, 5, what="a bar trace per key")
    assert [t.name for t in view.figure.data] == ["A", "B"]
    assert list(view.figure.data[0].y) == [4.0] and list(view.figure.data[1].y) == [2.0]
    assert np.issubdtype(np.asarray(view.figure.data[0].x).dtype, np.datetime64)

    define()  # re-run: a new handler, the same window, its state and its rows kept
    await wait_until(lambda: app.last_swap_ms is not None, 5, what="the swap")
    await app.send_batch("ticks", [{"symbol": "A", "qty": 1, "ts": 210}])
    await wait_until(lambda: len(view.figure.data[0].y) == 2, 5, what="the next window of A on the same chart")
    assert list(view.figure.data[0].y) == [4.0, 5.0]  # the window before the re-run continued: 5, not lost
    with pytest.raises(ValueError, match="not a column"):
        live_window(app, "bars", y="price")
