"""Candles as the OHLC aggregators hand them out, and their stream encoding."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Dict, Mapping, Union

from streammachine.ohlc.ticks import coerce_symbol

FIELDS = ("candle_start_ms", "open", "high", "low", "close", "volume", "timestamp_ms", "trade_count")


@dataclass(frozen=True, slots=True)
class Candle:
    """One interval's candle: a snapshot (later ticks do not change it).

    ``timestamp_ms`` is the time of the latest tick in it; ``candle_start_ms``
    the interval's start, aligned to the epoch.
    """

    candle_start_ms: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    timestamp_ms: int
    trade_count: int

    def as_dict(self) -> Dict[str, Any]:
        return asdict(self)


def interval_suffix(interval_ms: int) -> str:
    """How an interval names its output stream: 60000 -> "1m", 3600000 -> "1h", 15000 -> "15s", 250 -> "250ms"."""
    for unit_ms, suffix in ((3_600_000, "h"), (60_000, "m"), (1000, "s")):
        if interval_ms % unit_ms == 0:
            return f"{interval_ms // unit_ms}{suffix}"
    return f"{interval_ms}ms"


def format_candle_for_redis(
    candle: Union[Candle, Mapping[str, Any]], symbol: Union[str, bytes], interval_ms: int
) -> Dict[str, str]:
    """The fields to XADD for a candle, all str: symbol, interval_ms, then the candle's fields.

    Floats are written with ``repr`` (``str``), which reads back exactly.
    """
    if isinstance(candle, Mapping):
        values = candle
    else:
        values = {name: getattr(candle, name) for name in FIELDS}
    record = {"symbol": coerce_symbol(symbol), "interval_ms": str(int(interval_ms))}
    for name in FIELDS:
        record[name] = str(values[name])
    return record
