"""OHLC candles from ticks: the aggregator (compiled or pure Python), helpers, the stream consumer.

``FastOHLC`` is the compiled aggregator when ``streammachine._speedups._ohlc``
is built, else the pure-Python one (same behaviour); ``_HAS_FAST_OHLC_CYTHON``
says which. Setting ``pure_python`` in the settings (STREAMMACHINE_PURE_PYTHON=1)
selects the Python one even when the compiled one is there.
"""

from __future__ import annotations

from typing import Iterable, Optional

from streammachine.config import ConfigError, Settings
from streammachine.ohlc.aggregator import CythonFastOHLC, OHLCMethods, PythonFastOHLC, choose_implementation
from streammachine.ohlc.candle import Candle, format_candle_for_redis, interval_suffix
from streammachine.ohlc.ticks import DEFAULT_INTERVALS
from streammachine.redis.entries import parse_stream_id_timestamp


def _pure_python_requested() -> bool:
    try:
        settings = Settings.from_env()
    except ConfigError:  # an unrelated bad variable is reported where it is used, not here
        return False
    return bool(getattr(settings, "pure_python", False))


FastOHLC = choose_implementation(_pure_python_requested())
_HAS_FAST_OHLC_CYTHON = FastOHLC is CythonFastOHLC


def create_ohlc_aggregator(intervals: Optional[Iterable[int]] = None) -> OHLCMethods:
    """A FastOHLC for ``intervals`` (ms); default 1 minute and 5 minutes."""
    return FastOHLC(DEFAULT_INTERVALS if intervals is None else intervals)


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
