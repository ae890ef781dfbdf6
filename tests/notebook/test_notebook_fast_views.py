"""Views for fast streams: a time window, a bounded number of points per frame, spikes kept."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from streammachine import TimeSeriesBuffer
from streammachine.notebook import live_line


def _fast_buffer(rate: int = 20_000, seconds: float = 2.5) -> TimeSeriesBuffer:
    n = int(rate * seconds)
    buffer = TimeSeriesBuffer(max_age_seconds=3600, max_rows=n)
    start = 1_700_000_000_000.0
    stamps = start + np.arange(n) * (1000.0 / rate)
    values = np.sin(np.arange(n) / 500.0)
    values[n - 3000] = 50.0  # a spike in the last second
    buffer.append(pd.DataFrame({"timestamp_ms": stamps, "value": values}))
    return buffer


async def test_a_time_window_on_a_fast_stream_spans_that_time_in_a_bounded_number_of_points():
    buffer = _fast_buffer()
    by_time = live_line(buffer, y="value", window="1s", max_points=500)
    by_rows = live_line(buffer, y="value", window=500)
    try:
        for view in (by_time, by_rows):
            view.refresh(force=True)
        xs = pd.to_datetime(by_time.figure.data[0].x)
        span = (xs[-1] - xs[0]).total_seconds()
        assert 0.99 <= span <= 1.0, span  # the last second, not the last 500 rows (25 ms at 20k msg/s)
        assert by_time.points_sent <= 500 and max(by_time.figure.data[0].y) == 50.0  # the spike survives
        rows_span = pd.to_datetime(by_rows.figure.data[0].x)[-1] - pd.to_datetime(by_rows.figure.data[0].x)[0]
        assert rows_span.total_seconds() < 0.03
        every = live_line(buffer, y="value", window="1s", max_points=None)
        every.refresh(force=True)
        assert every.points_sent == 20_001  # None: every point of the window
        every.close()
    finally:
        by_time.close()
        by_rows.close()


async def test_time_windows_accept_durations_and_name_bad_ones():
    buffer = TimeSeriesBuffer(max_age_seconds=10)
    for good in ("30s", "500ms", "2min", pd.Timedelta(seconds=3)):
        live_line(buffer, y="v", window=good).close()
    for bad in ("soon", "-1s", "0s", True, 0):
        with pytest.raises(ValueError, match="window="):
            live_line(buffer, y="v", window=bad)
    with pytest.raises(ValueError, match="max_points=2: expected an int >= 4"):
        live_line(buffer, y="v", window="1s", max_points=2)


def test_the_lighter_view_sends_the_window_once_then_only_new_points():
    from streammachine.notebook import LiveStreamLine

    buffer = _fast_buffer(seconds=2.0)
    view = LiveStreamLine(buffer, "value", window="1s", max_points=1000)
    sent: list = []
    view.widget.send = lambda content, buffers=None: sent.append(content)  # what goes to the browser
    try:
        view.refresh(force=True)
        first = sent[-1]
        assert first["type"] == "reset" and len(first["x"][0]) <= 1000 and max(first["y"][0]) == 50.0
        assert first["range"][1] - first["range"][0] == 1000.0 and first["x"][0][-1] == first["range"][1]
        newest = first["x"][0][-1]
        buffer.append({"timestamp_ms": [newest + 1, newest + 2, newest + 3], "value": [1.0, 2.0, 3.0]})
        view.refresh()
        assert sent[-1]["type"] == "extend" and sent[-1]["x"] == [[newest + 1, newest + 2, newest + 3]]
        assert sent[-1]["y"] == [[1.0, 2.0, 3.0]] and view.last_frame_bytes < 200
        assert not view.refresh()  # nothing new: nothing sent
        view._from_browser(view.widget, {"type": "snapshot"}, [])  # a browser (re)shows the view
        view.refresh()
        assert sent[-1]["type"] == "reset" and sent[-1]["x"][0][-1] == newest + 3 and view.snapshots == 2
        fast = np.arange(1, 2001) * 0.05 + newest + 3  # 2000 rows in 100 ms: a tenth of the window
        buffer.append({"timestamp_ms": fast, "value": np.sin(fast)})
        view.refresh()
        assert sent[-1]["type"] == "extend" and len(sent[-1]["x"][0]) <= 102  # its share of max_points
    finally:
        view.close()
