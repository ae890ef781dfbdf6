"""Stream read replies as pandas DataFrames, and trimming frames by age.

One row per entry, in reply order: the stream name, the id, the id's
milliseconds as int64 (and optionally its sequence), then one column per
field. A field column becomes a number column only when no value changes on
the way: int64 when every present value is an integer written the way
``str(int)`` writes it (so ``"00700"``, ``"+7"``, ``" 7"``, ``"1_000"`` and
integers beyond int64 stay text), else float64 when every one is a plain
decimal number whose float reads back as the same number (so ``"nan"``,
``"inf"``, ``"0x10"`` and digits a float cannot hold stay text), else the
column stays text. Entries missing a field get NaN (numeric) or None (text)
there; an integer column with missing values becomes float64 only while
every integer fits a float exactly (|n| <= 2**53), else it stays text.

``TimeSeriesBuffer`` (a rolling window of such frames) lives in
``streammachine.data.buffer`` and is re-exported here.
"""

from __future__ import annotations

import math
import re
import time
from decimal import Decimal
from typing import Any, Dict, List, Optional, cast

import numpy as np
import pandas as pd

from streammachine._validate import check_non_negative
from streammachine.data.buffer import TimeSeriesBuffer
from streammachine.redis.entries import _short, as_text, is_entry, iter_stream_batches, parse_stream_id

__all__ = ["streams_to_dataframe", "streams_to_dataframe_fast", "prune_old_dataframe_rows", "TimeSeriesBuffer"]

SEQUENCE_COLUMN = "sequence"


def streams_to_dataframe(
    streams: Any,
    stream_name_column: Optional[str] = "stream",
    id_column: Optional[str] = "id",
    timestamp_column: Optional[str] = "timestamp_ms",
    include_sequence: bool = False,
) -> pd.DataFrame:
    """Convert an XREAD/XREADGROUP reply (RESP2 or RESP3) or XRANGE entries to a DataFrame.

    Pass None for a ``*_column`` argument to leave that column out. A field
    whose name equals one of these columns is an error (rename the column
    with the argument) rather than silently overwritten. A malformed entry or
    id raises ValueError naming it.
    """
    names: List[Optional[str]] = []
    ids: List[Any] = []
    millis: List[int] = []
    sequences: List[int] = []
    rows: List[Any] = []
    for name, entries in iter_stream_batches(streams):
        text_name = as_text(name)
        for entry in entries:
            if not is_entry(entry):
                raise ValueError(f"stream {text_name!r}: expected an (id, fields) entry, got {_short(entry)}")
            entry_id, fields = entry
            ms, seq = parse_stream_id(entry_id)
            names.append(text_name)
            ids.append(entry_id)
            millis.append(ms)
            sequences.append(seq)
            rows.append(fields or {})

    meta: Dict[str, Any] = {}
    if stream_name_column is not None:
        meta[stream_name_column] = names
    if id_column is not None:
        meta[id_column] = [as_text(i) for i in ids]
    if timestamp_column is not None:
        meta[timestamp_column] = np.array(millis, dtype=np.int64)
    if include_sequence:
        meta[SEQUENCE_COLUMN] = np.array(sequences, dtype=np.int64)

    columns = _field_columns(rows)
    clash = sorted(set(columns) & set(meta))
    if clash:
        raise ValueError(
            f"field(s) {clash} clash with the frame's own columns {list(meta)}: "
            "pass a different stream_name_column/id_column/timestamp_column (or None to leave it out)"
        )
    meta.update(columns)
    return pd.DataFrame(meta, index=pd.RangeIndex(len(rows)))


def streams_to_dataframe_fast(
    streams: Any,
    stream_name_column: Optional[str] = "stream",
    id_column: Optional[str] = "id",
    timestamp_column: Optional[str] = "timestamp_ms",
) -> pd.DataFrame:
    """The reference API's fast variant: the same frame as ``streams_to_dataframe``.

    There is one implementation, and it is the fast one (column-wise, with
    numeric parsing in numpy), so both names give identical results.
    """
    return streams_to_dataframe(streams, stream_name_column, id_column, timestamp_column, include_sequence=False)


def _field_columns(rows: List[Any]) -> Dict[str, Any]:
    """Field values gathered column by column (the fast path: every entry has the same fields)."""
    if not rows:
        return {}
    first = rows[0]
    width = len(first)
    if all(len(fields) == width for fields in rows):
        try:
            return {_field_name(key): _parse_column([fields[key] for fields in rows]) for key in first}
        except KeyError:
            pass  # same width, different names: fall through to the general path
    raw_keys_by_name: Dict[str, List[Any]] = {}
    for fields in rows:
        for key in fields:
            keys = raw_keys_by_name.setdefault(_field_name(key), [])
            if key not in keys:
                keys.append(key)
    columns = {}
    for name, keys in raw_keys_by_name.items():
        if len(keys) == 1:
            (key,) = keys
            values = [fields.get(key) for fields in rows]
        else:  # b"price" in some entries, "price" in others: one column
            values = [next((fields[k] for k in keys if k in fields), None) for fields in rows]
        columns[name] = _parse_column(values)
    return columns


def _field_name(key: Any) -> str:
    return cast(str, as_text(key))  # a field name is never None (a hand-built reply's odd key passes through)


def _parse_column(values: List[Any]) -> Any:
    """int64 or float64 when every present value reads back unchanged as one (see the module docstring), else text."""
    present = [v for v in values if v is not None] if None in values else values
    parsed = _parse_numbers(present) if present else None
    if parsed is None:
        return [as_text(v) for v in values]
    if len(present) == len(values):
        return parsed
    if parsed.dtype.kind in "iu" and (np.abs(parsed) > _FLOAT_EXACT_INT).any():
        return [as_text(v) for v in values]  # NaN needs a float column, and a float would round these integers
    full = np.full(len(values), np.nan)
    full[[i for i, v in enumerate(values) if v is not None]] = parsed
    return full


_FLOAT_EXACT_INT = 2**53
# What numpy's lenient parser takes but a number column must not (it would change the value or its text):
# spaces, underscores, "nan"/"inf" (letters), leading zeros, signs other than "-"; a value with "+", "e" or "E"
# (an exponent) is checked on its own against the plain decimal form.
_NUMBER_BYTES = b"0123456789-.eE+"
_PLAIN_DECIMAL = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?")
# a decimal of at most 15 digits (DBL_DIG) reads back from a double unchanged; longer ones are checked one by one
_EXACT_DIGITS = 15


def _parse_numbers(values: List[Any]) -> Optional[np.ndarray]:
    """The values as an int64 or float64 array, or None when one of them would not read back unchanged.

    The checks run column-wise in C (numpy's parser and printer, bytes
    methods); only values with an exponent or more than 15 characters are
    looked at one by one.
    """
    types = set(map(type, values))
    if len(types) > 1 or not types <= {str, bytes}:
        if not types & {str, bytes}:
            try:
                numbers = np.asarray(values)
            except (ValueError, TypeError):  # ragged or otherwise not array-like
                return None
            if numbers.dtype.kind in "biuf":
                return numbers  # already numbers (a hand-built reply)
        values = [as_text(v) if isinstance(v, (str, bytes)) else str(v) for v in values]
        types = {str}
    as_bytes = types == {bytes}
    if as_bytes:
        joined = b"\x00".join(values)
    else:
        text_joined = "\x00".join(values)
        if not text_joined.isascii():
            return None
        joined = text_joined.encode("ascii")
    # NUL: numpy drops a trailing one (b"1\x00" -> 1) and int() refuses it, so such a value is text
    if joined.count(b"\x00") != len(values) - 1 or joined.translate(None, _NUMBER_BYTES + b"\x00"):
        return None
    array = np.asarray(values)
    text = array.dtype.kind  # "S" or "U"
    try:
        integers = array.astype(np.int64)
    except (ValueError, OverflowError):  # not integers, or beyond int64 (then as floats, checked below)
        integers = None
    if integers is not None and (integers.astype(text) == array).all():  # "00700", "+7", "-0" print otherwise
        return integers
    try:
        floats = array.astype(np.float64)
    except ValueError:
        return None
    zero, minus_zero, point, minus_point = (b"0", b"-0", b"0.", b"-0.") if as_bytes else ("0", "-0", "0.", "-0.")
    lengths = np.char.str_len(array)
    leading_zero = (np.char.startswith(array, zero) & ~np.char.startswith(array, point) & (lengths > 1)) | (
        np.char.startswith(array, minus_zero) & ~np.char.startswith(array, minus_point) & (lengths > 2)
    )
    if leading_zero.any():
        return None
    careful = lengths > _EXACT_DIGITS
    if b"e" in joined or b"E" in joined or b"+" in joined:
        careful |= np.fromiter((_has_exponent(v) for v in values), bool, len(values))
    rows = np.flatnonzero(careful)
    if rows.size:
        printed_alike = (floats[rows].astype(text) == array[rows]) & np.isfinite(floats[rows])
        for index in rows[~printed_alike].tolist():
            value = values[index]
            if not _same_decimal(value.decode("ascii") if as_bytes else value, floats[index].item()):
                return None
    return floats


def _has_exponent(value: Any) -> bool:
    marks = (b"e", b"E", b"+") if type(value) is bytes else ("e", "E", "+")
    return any(mark in value for mark in marks)


def _same_decimal(text: str, number: float) -> bool:
    """Whether ``number`` (parsed from ``text``) prints as the same decimal value ("1.50" is 1.5, "1e5" 100000.0)."""
    return bool(_PLAIN_DECIMAL.fullmatch(text)) and math.isfinite(number) and Decimal(text) == Decimal(repr(number))


def prune_old_dataframe_rows(
    df: pd.DataFrame,
    cutoff_seconds: float,
    timestamp_column: str = "timestamp_ms",
    current_time: Optional[float] = None,
) -> pd.DataFrame:
    """The rows of ``df`` at most ``cutoff_seconds`` old (``timestamp_column`` in epoch ms).

    ``current_time`` is epoch seconds (default: ``time.time()``); a row
    exactly ``cutoff_seconds`` old is kept. Returns a new frame; ``df`` is
    not modified. An empty frame comes back empty, whatever its columns (an
    empty buffer or read has nothing to prune).
    """
    check_non_negative("cutoff_seconds", cutoff_seconds, expected="a finite number of seconds >= 0")
    if len(df) == 0:
        return df.copy()
    if timestamp_column not in df.columns:
        raise ValueError(
            f"timestamp_column {timestamp_column!r} is not a column of the frame (columns: {list(df.columns)})"
        )
    timestamps = df[timestamp_column]
    if not pd.api.types.is_numeric_dtype(timestamps) or pd.api.types.is_bool_dtype(timestamps):
        raise ValueError(
            f"column {timestamp_column!r} has dtype {timestamps.dtype}: expected epoch milliseconds (int or float)"
        )
    now = time.time() if current_time is None else current_time
    cutoff_ms = (now - cutoff_seconds) * 1000.0
    return df.loc[(timestamps >= cutoff_ms).to_numpy()]
