"""What a valid tick is: the checks both OHLC cores share.

The cores check the common case inline (exact float/int types); anything
else comes here, so the rules and the error messages exist once. Every
error is a ValueError naming the field and the value.
"""

from __future__ import annotations

import math
import operator
from typing import Any, Optional, Tuple

import numpy as np

from streammachine._validate import check_positive
from streammachine.redis.entries import MAX_TIMESTAMP_MS, _short

DEFAULT_INTERVALS = (60_000, 300_000)


def normalise_intervals(intervals: Any) -> Tuple[int, ...]:
    """Candle lengths in ms: positive integers, duplicates dropped, ascending."""
    if intervals is None:
        return DEFAULT_INTERVALS
    if isinstance(intervals, (int, np.integer)) and not isinstance(intervals, bool):
        intervals = [intervals]
    try:
        values = list(intervals)
    except TypeError:
        raise ValueError(
            f"intervals={_short(intervals)}: expected a list of candle lengths in ms, e.g. [60000, 300000]"
        ) from None
    if not values:
        raise ValueError("intervals=[]: expected at least one candle length in ms, e.g. [60000]")
    checked = set()
    for value in values:
        checked.add(
            check_positive(
                "interval",
                value,
                integer=True,
                maximum=MAX_TIMESTAMP_MS,
                expected="a positive integer number of milliseconds",
            )
        )
    return tuple(sorted(checked))


def coerce_symbol(symbol: Any) -> str:
    """The symbol's name as str (bytes must be UTF-8); raises ValueError otherwise."""
    if isinstance(symbol, bytes):
        try:
            name = symbol.decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError(f"symbol {_short(symbol)}: expected UTF-8 text") from None
    elif isinstance(symbol, str):
        name = str(symbol)
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(f"symbol {_short(symbol)}: expected text encodable as UTF-8") from None
    else:
        raise ValueError(f"symbol {_short(symbol)}: expected str or bytes")
    if not name:
        raise ValueError("symbol '': expected a non-empty name")
    return name


def both_spellings(name: str) -> Tuple[str, bytes]:
    """A name as str and as UTF-8 bytes: symbols and field names arrive in either spelling."""
    return name, name.encode("utf-8")


def coerce_price(value: Any, field: str = "price") -> float:
    number = _number(value, field)
    if not math.isfinite(number):
        raise ValueError(f"{field}={_short(value)}: expected a finite number")
    return number + 0.0  # -0.0 -> 0.0, as the cores store it


def coerce_volume(value: Any, field: str = "volume") -> float:
    number = _number(value, field)
    if not (math.isfinite(number) and number >= 0.0):
        raise ValueError(f"{field}={_short(value)}: expected a finite number >= 0")
    return number + 0.0


def _number(value: Any, field: str) -> float:
    if isinstance(value, (str, bytes, bytearray, bool)) or value is None:
        raise ValueError(f"{field}={_short(value)}: expected a number")
    try:
        return float(value)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"{field}={_short(value)}: expected a number") from None


def coerce_timestamp(value: Any, field: str = "timestamp_ms") -> int:
    """Epoch milliseconds as int: an integer, or a finite float (truncated), in [0, 2**63)."""
    if isinstance(value, bool) or value is None or isinstance(value, (str, bytes)):
        raise ValueError(f"{field}={_short(value)}: expected integer epoch milliseconds")
    if isinstance(value, (float, np.floating)):
        if not (math.isfinite(value) and 0 <= value < 2.0**63):
            raise ValueError(f"{field}={_short(value)}: expected epoch milliseconds >= 0")
        return int(value)
    try:
        millis = operator.index(value)
    except TypeError:
        raise ValueError(f"{field}={_short(value)}: expected integer epoch milliseconds") from None
    if not 0 <= millis <= MAX_TIMESTAMP_MS:
        raise ValueError(f"{field}={_short(value)}: expected epoch milliseconds in [0, 2**63)")
    return millis


def coerce_tick(symbol: Any, price: Any, volume: Any, timestamp_ms: Any) -> Tuple[str, float, float, int]:
    """(symbol name, price, volume, timestamp) checked in that order; the first bad one raises."""
    return coerce_symbol(symbol), coerce_price(price), coerce_volume(volume), coerce_timestamp(timestamp_ms)


def parse_field_number(raw: Any) -> Optional[float]:
    """A stream field value (bytes/str/number) as a float via ``float()``, or None if it does not parse."""
    try:
        return float(raw)
    except (TypeError, ValueError, OverflowError):
        return None


def completion_cut(
    latest_ms: Optional[int], interval_ms: int, as_of_ms: Any = None, before_timestamp: Any = None
) -> Optional[int]:
    """Candles starting before this are complete: they ended at or before the horizon.

    The horizon is the symbol's latest tick time, or ``as_of_ms`` when later
    (a wall clock, so a quiet symbol's candle completes too), or exactly
    ``before_timestamp`` when given (upstream's explicit horizon). None: the
    symbol has no tick yet and no horizon was given.
    """
    if before_timestamp is not None:
        if as_of_ms is not None:
            raise ValueError(
                f"before_timestamp={_short(before_timestamp)} and as_of_ms={_short(as_of_ms)}: pass one horizon, "
                "not both (before_timestamp: exactly that time; as_of_ms: the latest tick or that time, if later)"
            )
        cut = coerce_timestamp(before_timestamp, "before_timestamp")
        return cut - cut % interval_ms
    horizon = latest_ms
    if as_of_ms is not None:
        as_of = coerce_timestamp(as_of_ms, "as_of_ms")
        horizon = as_of if horizon is None else max(horizon, as_of)
    if horizon is None:
        return None
    return horizon - horizon % interval_ms


# -- batches of arrays ------------------------------------------------------


def prepare_tick_arrays(symbols: Any, prices: Any, volumes: Any, timestamps_ms: Any):
    """Arrays for ``update_arrays``: (symbols, prices f8, volumes f8, timestamps i8, valid mask).

    ``symbols`` comes back as one str/bytes (every row the same symbol) or a
    1-D object array. Rows with a bad price, volume or timestamp are False in
    the mask (the cores skip and count them); mismatched lengths are an
    error for the whole call.
    """
    prices_f, valid = _float_column(prices, "prices")
    count = len(prices_f)
    volumes_f, volumes_ok = _float_column(volumes, "volumes")
    stamps, stamps_ok = _timestamp_column(timestamps_ms)
    symbol_column: Any = symbols
    if not isinstance(symbols, (str, bytes)):
        symbol_column = np.asarray(symbols, dtype=object)
        if symbol_column.ndim != 1:
            raise ValueError(
                f"symbols: expected a 1-D sequence (or one str/bytes symbol), got shape {symbol_column.shape}"
            )
    lengths = {"prices": count, "volumes": len(volumes_f), "timestamps_ms": len(stamps)}
    if not isinstance(symbol_column, (str, bytes)):
        lengths["symbols"] = len(symbol_column)
    if len(set(lengths.values())) > 1:
        raise ValueError(f"update_arrays: columns differ in length {lengths}; expected equal lengths")
    valid &= volumes_ok & stamps_ok & (volumes_f >= 0.0)
    return symbol_column, prices_f + 0.0, volumes_f + 0.0, stamps, valid


def _float_column(values: Any, name: str):
    array = _one_dimensional(values, name)
    if array.dtype.kind in "iuf":
        array = array.astype(np.float64)
        return array, np.isfinite(array)
    out = np.zeros(len(array))
    ok = np.zeros(len(array), dtype=bool)
    for i, value in enumerate(array.tolist()):  # odd dtypes only: mixed objects, text, bools
        try:
            out[i] = _number(value, name)
        except ValueError:
            continue
        ok[i] = math.isfinite(out[i])
    return out, ok


def _timestamp_column(values: Any):
    array = _one_dimensional(values, "timestamps_ms")
    kind = array.dtype.kind
    if kind == "i":
        stamps = array.astype(np.int64)
        return stamps, stamps >= 0
    if kind == "u":
        ok = array <= MAX_TIMESTAMP_MS
        return np.where(ok, array, 0).astype(np.int64), ok
    if kind == "f":
        ok = np.isfinite(array) & (array >= 0) & (array < 2.0**63)
        return np.where(ok, array, 0).astype(np.int64), ok
    stamps = np.zeros(len(array), dtype=np.int64)
    ok = np.zeros(len(array), dtype=bool)
    for i, value in enumerate(array.tolist()):
        try:
            stamps[i] = coerce_timestamp(value)
        except ValueError:
            continue
        ok[i] = True
    return stamps, ok


def _one_dimensional(values: Any, name: str) -> np.ndarray:
    try:
        array = np.asarray(values)
    except (TypeError, ValueError):  # ragged
        array = None
    if array is None or (array.dtype.kind not in "biufO" and not isinstance(values, np.ndarray)):
        # a list mixing numbers and text: numpy would turn every element into text; keep the objects
        array = np.empty(len(values), dtype=object)
        array[:] = list(values)
    if array.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D sequence, got shape {array.shape}")
    return array
