"""A live candlestick chart of one symbol and interval of an OHLC aggregator."""

from __future__ import annotations

from typing import Any, Dict, Hashable, Optional

import ipywidgets as widgets
import numpy as np
import pandas as pd
import plotly.graph_objects as go

from streammachine.notebook.refresh import LiveView, check_positive
from streammachine.ohlc import interval_suffix


class LiveCandles(LiveView):
    """The last ``window`` candles of ``symbol`` at ``interval_ms``, redrawn as ticks arrive.

    The view keeps the candles it has seen, so a pipeline that flushes
    completed candles out of the aggregator (to emit them) still shows them.
    """

    source_attribute = "aggregator"

    def __init__(
        self,
        aggregator,
        symbol: Any,
        interval_ms: Optional[int] = None,
        *,
        window: int = 60,
        fps: float = 5,
        title: Optional[str] = None,
        height: int = 380,
    ) -> None:
        check_positive("window", window)
        intervals = list(aggregator.intervals)
        interval_ms = intervals[0] if interval_ms is None else interval_ms
        if interval_ms not in intervals:
            raise ValueError(f"interval_ms={interval_ms!r}: not one of the aggregator's intervals {intervals}")
        self.aggregator = aggregator
        self.symbol = symbol.decode() if isinstance(symbol, bytes) else symbol
        self.interval_ms = interval_ms
        self.window = int(window)
        self._candles: Dict[int, Any] = {}
        self.figure = go.FigureWidget(
            data=[go.Candlestick(name=self.symbol)],
            layout=go.Layout(
                title=dict(text=title or f"{self.symbol} {interval_suffix(interval_ms)}"),
                height=height,
                margin=dict(l=50, r=10, t=40, b=30),
                uirevision="keep",
                xaxis=dict(rangeslider=dict(visible=False)),
            ),
        )
        # displayed inside a box, so close() can take the figure off the page cleanly (see close_tree)
        super().__init__(widgets.VBox([self.figure]), fps)

    def _source_replaced(self) -> None:
        self._candles.clear()

    @property
    def candles(self) -> list:
        """The candles on screen, oldest first."""
        return [self._candles[start] for start in sorted(self._candles)]

    def _version(self) -> Hashable:
        return self.aggregator.tick_count, self.aggregator.latest_timestamp(self.symbol)

    def _render(self) -> None:
        for candle in self.aggregator.get_candles(self.symbol, self.interval_ms):
            self._candles[candle.candle_start_ms] = candle
        for start in sorted(self._candles)[: -self.window]:
            del self._candles[start]
        candles = self.candles
        if not candles:
            return
        with self.figure.batch_update():
            trace = self.figure.data[0]
            trace.x = pd.to_datetime(np.array([c.candle_start_ms for c in candles]), unit="ms").to_numpy()
            trace.open = np.array([c.open for c in candles])
            trace.high = np.array([c.high for c in candles])
            trace.low = np.array([c.low for c in candles])
            trace.close = np.array([c.close for c in candles])


def live_candles(
    aggregator,
    symbol: Any,
    interval_ms: Optional[int] = None,
    *,
    window: int = 60,
    fps: float = 5,
    title: Optional[str] = None,
    height: int = 380,
) -> LiveCandles:
    """A live candlestick chart (display it: it is the figure); ``close()`` stops it.

    >>> agg = create_ohlc_aggregator(intervals=[1000, 5000])
    >>> live_candles(agg, "AAPL", 1000)
    """
    view = LiveCandles(aggregator, symbol, interval_ms, window=window, fps=fps, title=title, height=height)
    if view.aggregator.latest_timestamp(view.symbol) is not None:
        view.refresh()
    return view.start()
