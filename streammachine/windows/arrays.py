"""``add_arrays`` input: checked and converted once, shared by both cores.

Columns are used as they are when they already are int64 times and
float64 values (no copies: the array path is for millions of rows). Keys
are resolved by the core's loop (the compiled one caches them by object
identity), so no factorisation pass is needed; rows whose key is not text
come back from the core and are reported like the other bad rows.
"""

from __future__ import annotations

from typing import Any, Dict, List, NamedTuple, Optional, Sequence

import numpy as np

from streammachine.redis.entries import MAX_TIMESTAMP_MS, _short
from streammachine.windows.values import key_name, number, stamp


class PreparedArrays(NamedTuple):
    times: np.ndarray  # int64
    columns: List[np.ndarray]  # float64, contiguous, one per field of the plan
    valid: Optional[np.ndarray]  # bool; None when every row is valid
    keys: Any  # one key name (str), intp codes into ``names``, or a 1-D object array
    names: Optional[List[str]]
    reasons: Dict[int, str]  # row -> why it is rejected


def prepare_arrays(
    plan: Dict[str, Any], times: Any, keys: Any, columns: Any, key_names: Optional[Sequence[Any]] = None
) -> PreparedArrays:
    """Check ``add_arrays`` input; mismatched lengths or a missing column fail the whole call."""
    fields = plan["fields"]
    if not hasattr(columns, "get"):
        raise ValueError(f"columns={_short(columns)}: expected a mapping of field -> 1-D array, for {list(fields)}")
    missing = [name for name in fields if columns.get(name) is None]
    if missing:
        raise ValueError(f"columns: missing {missing}; this window needs {list(fields)}")
    reasons: Dict[int, str] = {}
    stamps, ok = _times(times, reasons)
    count = len(stamps)
    values = []
    for name in fields:
        column, good = _values(columns[name], name, count, reasons)
        values.append(column)
        if good is not None:
            ok = good if ok is None else ok & good
    keys, names, good = _keys(keys, count, key_names, reasons)
    if good is not None:
        ok = good if ok is None else ok & good
    return PreparedArrays(stamps, values, ok, keys, names, reasons)


def bad_key_reason(keys: Any, row: int) -> str:
    return f"keys[{row}]={_short(keys[row])}: expected text (str, or UTF-8 bytes)"


def _column(values: Any, name: str) -> np.ndarray:
    array = np.asarray(values)
    if array.dtype.kind not in "biufO":
        array = np.asarray(values, dtype=object)
    if array.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array, got shape {array.shape}")
    return array


def _note(reasons: Dict[int, str], bad: np.ndarray, message) -> None:
    for i in np.flatnonzero(bad).tolist():
        reasons.setdefault(i, message(i))


def _times(times: Any, reasons: Dict[int, str]):
    raw = _column(times, "times")
    kind = raw.dtype.kind
    if kind in "iu" and (not len(raw) or (raw.min() >= 0 and raw.max() <= MAX_TIMESTAMP_MS)):
        return np.ascontiguousarray(raw, dtype=np.int64), None  # the usual case: no copy, no mask
    if kind in "iu":
        ok = (raw >= 0) & (raw <= MAX_TIMESTAMP_MS)
    elif kind == "f":
        ok = np.isfinite(raw) & (raw >= 0) & (raw < 2.0**63)
        ok[ok] &= raw[ok] == np.floor(raw[ok])
    else:
        out, ok = np.zeros(len(raw), dtype=np.int64), np.zeros(len(raw), dtype=bool)
        for i, value in enumerate(raw.tolist()):
            try:
                out[i] = stamp(value, "times")
                ok[i] = True
            except ValueError:
                continue
        _note(reasons, ~ok, lambda i: f"times[{i}]={_short(raw[i])}: expected integer epoch milliseconds >= 0")
        return out, ok
    _note(reasons, ~ok, lambda i: f"times[{i}]={_short(raw[i])}: expected integer epoch milliseconds >= 0")
    return np.where(ok, raw, 0).astype(np.int64), ok


def _values(values: Any, name: str, count: int, reasons: Dict[int, str]):
    raw = _column(values, name)
    if len(raw) != count:
        raise ValueError(f"add_arrays: column {name!r} has {len(raw)} rows, times has {count}")
    if raw.dtype.kind in "iuf":
        column = np.ascontiguousarray(raw, dtype=np.float64)
        good = np.isfinite(column)
        if good.all():
            return column, None
    else:
        column, good = np.zeros(count), np.zeros(count, dtype=bool)
        for i, value in enumerate(raw.tolist()):
            try:
                column[i] = number(value, name)
                good[i] = True
            except ValueError:
                continue
    _note(reasons, ~good, lambda i: f"field {name!r}={_short(raw[i])}: expected a finite number")
    return column, good


def _keys(keys: Any, count: int, key_names: Any, reasons: Dict[int, str]):
    if isinstance(keys, (str, bytes)):
        return key_name(keys, "keys"), None, None
    column = _column(keys, "keys")
    if len(column) != count:
        raise ValueError(f"add_arrays: keys has {len(column)} rows, times has {count}")
    if column.dtype.kind in "iu":
        if key_names is None:
            raise ValueError("keys: integer codes need key_names= (code -> key)")
        names = [key_name(value, "key_names") for value in key_names]
        good = (column >= 0) & (column < len(names))
        _note(reasons, ~good, lambda i: f"keys[{i}]={int(column[i])}: expected a code in [0, {len(names)})")
        codes = np.where(good, column, 0).astype(np.intp)
        return codes, names, None if good.all() else good
    if column.dtype.kind != "O":
        column = column.astype(object)
    return column, None, None
