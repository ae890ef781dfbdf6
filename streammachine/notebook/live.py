"""A live line chart of a ``TimeSeriesBuffer``: plotly ``FigureWidget``, throttled, windowed, downsampled.

At 20k msg/s the last 500 rows span a few milliseconds: a fast stream wants a
time window (``window="30s"``) and, since a chart cannot show more than a low
and a high per pixel column, at most ``max_points`` points per line (min/max
per bucket, so spikes stay visible): the bytes sent per frame stay bounded
whatever the rate.
"""

from __future__ import annotations

import datetime as dt
from typing import Hashable, Optional, Sequence, Union

import ipywidgets as widgets
import numpy as np
import pandas as pd
import plotly.graph_objects as go

from streammachine.data.downsample import minmax_indices
from streammachine.notebook.refresh import LiveView, check_positive

Window = Union[int, str, dt.timedelta]


def window_span(window: Window) -> tuple:
    """("rows", n) for an int, ("ms", span) for a duration ("30s", "2min", a timedelta); else ValueError."""
    if isinstance(window, bool):
        raise ValueError(f"window={window!r}: expected a row count or a duration such as '30s'")
    if isinstance(window, int):
        check_positive("window", window)
        return "rows", window
    try:
        span = pd.Timedelta(window)
    except (TypeError, ValueError):
        span = None
    if span is None or pd.isna(span) or span <= pd.Timedelta(0):
        raise ValueError(f"window={window!r}: expected a row count or a positive duration such as '30s' or '500ms'")
    return "ms", span / pd.Timedelta(milliseconds=1)


class LiveLine(LiveView):
    """One line per ``y`` column against ``x`` (default: the buffer's timestamp column, shown as time).

    ``window``: the last N rows (an int) or the last span of time (``"30s"``,
    a ``timedelta``), measured back from the newest timestamp. Each line
    sends at most ``max_points`` points a frame (min/max per bucket; None:
    every point). ``figure`` is the ``FigureWidget``; ``close()`` stops the
    refresh and closes it. ``points_sent`` counts the points of the last frame.
    """

    source_attribute = "buffer"

    def __init__(
        self,
        buffer,
        y: Union[str, Sequence[str]],
        *,
        x: Optional[str] = None,
        window: Window = 500,
        fps: float = 10,
        title: Optional[str] = None,
        height: int = 350,
        mode: str = "lines",
        max_points: Optional[int] = 2000,
    ) -> None:
        self._window_kind, self._window_size = window_span(window)
        if max_points is not None:
            if isinstance(max_points, bool) or not isinstance(max_points, int) or max_points < 4:
                raise ValueError(f"max_points={max_points!r}: expected an int >= 4, or None for every point")
        self.max_points = max_points
        self.points_sent = 0
        self.buffer = buffer
        self.columns = [y] if isinstance(y, str) else list(y)
        if not self.columns or not all(isinstance(c, str) for c in self.columns):
            raise ValueError(f"y={y!r}: expected a column name or a list of column names")
        self.x = x or buffer.timestamp_column
        self.window = window
        self.figure = go.FigureWidget(
            data=[go.Scatter(name=column, mode=mode) for column in self.columns],
            layout=go.Layout(
                title=dict(text=title or ", ".join(self.columns)),
                height=height,
                margin=dict(l=50, r=10, t=40, b=40),
                uirevision="keep",
            ),
        )
        # displayed inside a box, so close() can take the figure off the page cleanly (see close_tree)
        super().__init__(widgets.VBox([self.figure]), fps)

    def _version(self) -> Hashable:
        return len(self.buffer), self.buffer.last_timestamp

    def _render(self) -> None:
        frame = self.buffer.get()
        if frame.empty:
            return
        if self._window_kind == "rows":
            frame = frame.iloc[-self._window_size :]
        else:
            stamps = frame[self.buffer.timestamp_column].to_numpy()
            frame = frame.iloc[int(stamps.searchsorted(stamps[-1] - self._window_size)) :]
        missing = [c for c in [self.x, *self.columns] if c not in frame.columns]
        if missing:
            raise KeyError(f"column(s) {missing} not in the buffer (columns: {list(frame.columns)})")
        xs = frame[self.x].to_numpy()
        if self.x == self.buffer.timestamp_column:
            xs = pd.to_datetime(xs, unit="ms").to_numpy()
        lines = []
        for column in self.columns:
            ys = frame[column].to_numpy()
            if self.max_points is not None and len(ys) > self.max_points:
                positions = frame[self.x].to_numpy()
                if not np.issubdtype(positions.dtype, np.number):
                    positions = np.arange(len(ys))  # x is no number (labels): buckets of rows
                keep = minmax_indices(positions, ys, (self.max_points - 2) // 2)
                lines.append((xs[keep], ys[keep]))
            else:
                lines.append((xs, ys))
        with self.figure.batch_update():
            for trace, (line_x, line_y) in zip(self.figure.data, lines):
                trace.x = line_x
                trace.y = line_y
        self.points_sent = sum(len(line_y) for _, line_y in lines)


def live_line(
    buffer,
    y: Union[str, Sequence[str]],
    *,
    x: Optional[str] = None,
    window: Window = 500,
    fps: float = 10,
    title: Optional[str] = None,
    height: int = 350,
    max_points: Optional[int] = 2000,
) -> LiveLine:
    """A live line chart of ``buffer`` that redraws while data flows (display it: it is the figure).

    ``window``: the last N rows, or a span of time for fast streams (``window="30s"``); at most
    ``max_points`` points per line a frame (min/max per bucket).

    >>> view = live_line(buffer, y="price", window="30s", fps=10)
    >>> view            # shows the chart
    >>> view.close()    # stops updating
    """
    view = LiveLine(buffer, y, x=x, window=window, fps=fps, title=title, height=height, max_points=max_points)
    if len(buffer):
        view.refresh()  # draw what is there now, before the first frame
    return view.start()
