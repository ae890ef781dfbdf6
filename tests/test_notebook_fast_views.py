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
