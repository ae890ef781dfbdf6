"""The bridge to the OHLC package: a window row with ``OHLC(...)`` columns as a ``Candle``.

``Window.tumbling(60_000, key="symbol").agg(OHLC("price", "volume"))`` makes
the same candles as ``FastOHLC([60_000])`` (open/close by time, ties by
arrival; the parity test holds them to it), so its rows can go wherever
candles go: ``format_candle_for_redis(candle_from_row(row), row["key"], 60_000)``.
"""

from __future__ import annotations

from typing import Any, Mapping

from streammachine.ohlc.candle import Candle


def candle_from_row(row: Mapping[str, Any], prefix: str = "") -> Candle:
    """The Candle in a row of a tumbling window with an ``OHLC`` aggregate (``prefix``: its keyword name)."""
    part = (lambda name: f"{prefix}_{name}") if prefix else (lambda name: name)
    try:
        return Candle(
            candle_start_ms=int(row["start"]),
            open=row[part("open")],
            high=row[part("high")],
            low=row[part("low")],
            close=row[part("close")],
            volume=row.get(part("volume"), 0.0),
            timestamp_ms=int(row[part("timestamp_ms")]),
            trade_count=int(row[part("trade_count")]),
        )
    except KeyError as exc:
        raise ValueError(f"row has no {exc.args[0]!r}: expected the columns of an OHLC aggregate") from None
