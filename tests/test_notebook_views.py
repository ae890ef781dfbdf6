"""Live views and the dashboard, fed by real agents on a real server.

These run on the test's event loop, which plays the kernel's loop: the
views' refresh tasks and the agents share it exactly as they do in a
kernel (the kernel tests show the same in a real ipykernel).
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from helpers import wait_until

from streammachine import TimeSeriesBuffer, create_ohlc_aggregator
from streammachine.notebook import LiveView, live_candles, live_line


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
