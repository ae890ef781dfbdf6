"""OHLC candles from ticks: the aggregator (compiled or pure Python), helpers, the stream consumer.

``FastOHLC`` is the compiled aggregator when ``streammachine._speedups._ohlc``
is built, else the pure-Python one (same behaviour); ``_HAS_FAST_OHLC_CYTHON``
says which. STREAMMACHINE_PURE_PYTHON=1 selects the Python one even when the
compiled one is there; both names are looked up when used, so the variable
counts whenever it is set.
"""

from __future__ import annotations

from typing import Any, Iterable, Optional

from streammachine.config import Settings
from streammachine.ohlc.aggregator import CythonFastOHLC, OHLCMethods, PythonFastOHLC, choose_implementation
from streammachine.ohlc.candle import Candle, format_candle_for_redis, interval_suffix
from streammachine.ohlc.ticks import DEFAULT_INTERVALS
from streammachine.redis.entries import parse_stream_id_timestamp


def _implementation() -> type:
    """Chosen when used, so STREAMMACHINE_PURE_PYTHON set after import counts."""
    return choose_implementation(Settings.read("pure_python"))


def __getattr__(name: str) -> Any:
    if name == "FastOHLC":
        return _implementation()
    if name == "_HAS_FAST_OHLC_CYTHON":
        return _implementation() is CythonFastOHLC
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def create_ohlc_aggregator(intervals: Optional[Iterable[int]] = None) -> OHLCMethods:
    """A FastOHLC for ``intervals`` (ms); default 1 minute and 5 minutes."""
    return _implementation()(DEFAULT_INTERVALS if intervals is None else intervals)


from streammachine.ohlc.consumer import FastOHLCConsumer  # noqa: E402  (needs the names above)

__all__ = [
    "FastOHLC",
    "FastOHLCConsumer",
    "create_ohlc_aggregator",
    "parse_stream_id_timestamp",
    "format_candle_for_redis",
    "_HAS_FAST_OHLC_CYTHON",
    "Candle",
    "interval_suffix",
    "PythonFastOHLC",
    "CythonFastOHLC",
]
