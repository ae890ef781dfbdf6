"""Stream read replies as pandas DataFrames, and trimming frames by age.

One row per entry, in reply order: the stream name, the id, the id's
milliseconds as int64 (and optionally its sequence), then one column per
field. A field column becomes int64 when every present value parses with
``int()``, else float64 when every one parses with ``float()``, else it stays
text. Entries missing a field get NaN (numeric) or None (text) there.

``TimeSeriesBuffer`` (a rolling window of such frames) lives in
``streammachine.data.buffer`` and is re-exported here.
"""

from __future__ import annotations

import time
from typing import Any, Dict, List, Optional

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
            return {as_text(key): _parse_column([fields[key] for fields in rows]) for key in first}
        except KeyError:
            pass  # same width, different names: fall through to the general path
    raw_keys_by_name: Dict[str, List[Any]] = {}
    for fields in rows:
        for key in fields:
            keys = raw_keys_by_name.setdefault(as_text(key), [])
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


def _parse_column(values: List[Any]) -> Any:
    """int64 if every present value parses as int, else float64 if as float, else text."""
    present = [v for v in values if v is not None] if None in values else values
    parsed = _parse_numbers(present) if present else None
    if parsed is None:
        return [as_text(v) for v in values]
    if len(present) == len(values):
        return parsed
    full = np.full(len(values), np.nan)
    full[[i for i, v in enumerate(values) if v is not None]] = parsed
    return full


def _parse_numbers(values: List[Any]) -> Optional[np.ndarray]:
    """The values as an int64 or float64 array, or None when one of them does not parse.

    numpy parses bytes and str with the same rules as ``int()``/``float()``
    (signs, whitespace, underscores, "nan"/"inf"), in C.
    """
    if bytes in set(map(type, values)) and any(type(v) is not bytes for v in values):
        values = [as_text(v) for v in values]
    try:
        array = np.asarray(values)
    except (ValueError, TypeError):  # ragged or otherwise not array-like
        return None
    kind = array.dtype.kind
    if kind in "biuf":  # already numbers (a hand-built reply)
        return array
    if kind in "SU" and (b"\x00" if kind == "S" else "\x00") in (b"" if kind == "S" else "").join(values):
        return None  # numpy drops trailing NULs (b"1\x00" -> 1); int()/float() refuse them: text it stays
    # int() first so "7" stays an integer; float arrays are never cast to int (that would truncate)
    for dtype in (np.int64, np.float64) if kind in "SU" else (np.float64,):
        try:
            return array.astype(dtype)
        except (ValueError, TypeError, OverflowError):
            continue
    return None


def prune_old_dataframe_rows(
    df: pd.DataFrame,
    cutoff_seconds: float,
    timestamp_column: str = "timestamp_ms",
    current_time: Optional[float] = None,
) -> pd.DataFrame:
    """The rows of ``df`` at most ``cutoff_seconds`` old (``timestamp_column`` in epoch ms).

    ``current_time`` is epoch seconds (default: ``time.time()``); a row
    exactly ``cutoff_seconds`` old is kept. Returns a new frame; ``df`` is
    not modified.
    """
    check_non_negative("cutoff_seconds", cutoff_seconds, expected="a finite number of seconds >= 0")
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
