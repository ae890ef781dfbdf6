"""A live line chart of a ``TimeSeriesBuffer``: plotly ``FigureWidget``, throttled, windowed."""

from __future__ import annotations

from typing import Hashable, Optional, Sequence, Union

import ipywidgets as widgets
import pandas as pd
import plotly.graph_objects as go

from streammachine.notebook.refresh import LiveView, check_positive


class LiveLine(LiveView):
    """One line per ``y`` column against ``x`` (default: the buffer's timestamp column, shown as time).

    Each frame sends the last ``window`` rows only. ``figure`` is the
    ``FigureWidget``; ``close()`` stops the refresh and closes it.
    """

    source_attribute = "buffer"

    def __init__(
        self,
        buffer,
        y: Union[str, Sequence[str]],
        *,
        x: Optional[str] = None,
        window: int = 500,
        fps: float = 10,
        title: Optional[str] = None,
        height: int = 350,
        mode: str = "lines",
    ) -> None:
        check_positive("window", window)
        self.buffer = buffer
        self.columns = [y] if isinstance(y, str) else list(y)
        if not self.columns or not all(isinstance(c, str) for c in self.columns):
            raise ValueError(f"y={y!r}: expected a column name or a list of column names")
        self.x = x or buffer.timestamp_column
        self.window = int(window)
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
        frame = frame.iloc[-self.window :]
        missing = [c for c in [self.x, *self.columns] if c not in frame.columns]
        if missing:
            raise KeyError(f"column(s) {missing} not in the buffer (columns: {list(frame.columns)})")
        xs = frame[self.x].to_numpy()
        if self.x == self.buffer.timestamp_column:
            xs = pd.to_datetime(xs, unit="ms").to_numpy()
        with self.figure.batch_update():
            for trace, column in zip(self.figure.data, self.columns):
                trace.x = xs
                trace.y = frame[column].to_numpy()


def live_line(
    buffer,
    y: Union[str, Sequence[str]],
    *,
    x: Optional[str] = None,
    window: int = 500,
    fps: float = 10,
    title: Optional[str] = None,
    height: int = 350,
) -> LiveLine:
    """A live line chart of ``buffer`` that redraws while data flows (display it: it is the figure).

    >>> view = live_line(buffer, y="price", window=300, fps=10)
    >>> view            # shows the chart
    >>> view.close()    # stops updating
    """
    view = LiveLine(buffer, y, x=x, window=window, fps=fps, title=title, height=height)
    if len(buffer):
        view.refresh()  # draw what is there now, before the first frame
    return view.start()
