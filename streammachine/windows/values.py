"""Reading a window's inputs from an entry or from arrays: key, event time, numbers.

The rules and the error messages live here once, for both cores: every
error is a ValueError naming the field, the value and what was expected.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from streammachine.ohlc.ticks import both_spellings
from streammachine.redis.entries import MAX_TIMESTAMP_MS, _short, as_text, parse_stream_id_timestamp


class Rejected(NamedTuple):
    """An entry (or array row) that was not taken, and why."""

    position: int
    id: Any
    error: str


def key_name(value: Any, field: Optional[str]) -> str:
    """A key as str: a str as is, bytes decoded as UTF-8."""
    if type(value) is str:
        return value
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError(f"key field {field!r}={_short(value)}: expected UTF-8 text") from None
    if isinstance(value, str):
        return str(value)
    what = f"key field {field!r}" if field else "stream name (key)"
    raise ValueError(f"{what}={_short(value)}: expected text (str or bytes)")


def number(raw: Any, field: str) -> float:
    """A field's value as a finite float: numbers as they are, text through ``float()``."""
    if type(raw) is float:
        value = raw
    elif isinstance(raw, bool) or raw is None:
        raise ValueError(f"field {field!r}={_short(raw)}: expected a finite number")
    else:
        try:
            value = float(raw)
        except (TypeError, ValueError, OverflowError):
            raise ValueError(f"field {field!r}={_short(raw)}: expected a finite number") from None
    if value - value != 0.0:
        raise ValueError(f"field {field!r}={_short(raw)}: expected a finite number")
    return value + 0.0


def stamp(raw: Any, field: str) -> int:
    """Event time in epoch milliseconds from a field: an integer (or integral text/float) in [0, 2**63)."""
    if type(raw) is int and 0 <= raw <= MAX_TIMESTAMP_MS:
        return raw
    if isinstance(raw, bool) or raw is None:
        raise ValueError(f"time field {field!r}={_short(raw)}: expected integer epoch milliseconds")
    try:
        value = int(raw)
    except (TypeError, ValueError, OverflowError):
        try:
            as_float = float(raw)
        except (TypeError, ValueError, OverflowError):
            as_float = math.nan
        if not (math.isfinite(as_float) and as_float == int(as_float)):
            raise ValueError(f"time field {field!r}={_short(raw)}: expected integer epoch milliseconds") from None
        value = int(as_float)
    if not 0 <= value <= MAX_TIMESTAMP_MS:
        raise ValueError(f"time field {field!r}={_short(raw)}: expected epoch milliseconds in [0, 2**63)")
    return value


class EntryReader:
    """Reads ``(key, ts, values)`` from one entry's fields for a window plan."""

    __slots__ = ("key", "time", "fields", "_key", "_time", "_fields")

    def __init__(self, plan: Dict[str, Any]) -> None:
        self.key: Optional[str] = plan["key"]
        self.time: str = plan["time"]
        self.fields: Tuple[str, ...] = plan["fields"]
        self._key = both_spellings(self.key) if self.key else None
        self._time = None if self.time == "id" else both_spellings(self.time)
        self._fields = [both_spellings(name) for name in self.fields]

    def read(self, fields: Any, entry_id: Any, stream: Any) -> Tuple[str, int, tuple]:
        if not hasattr(fields, "get"):
            raise ValueError(f"entry {_short(entry_id)}: fields={_short(fields)}: expected a mapping of field -> value")
        if self._key is None:
            name = "" if stream is None else key_name(as_text(stream), None)
        else:
            name = key_name(_get(fields, self._key, "key field"), self.key)
        if self._time is None:
            if entry_id is None:
                raise ValueError("id=None: this window takes event time from the stream id; pass id= (or time=FIELD)")
            ts = parse_stream_id_timestamp(entry_id)
        else:
            ts = stamp(_get(fields, self._time, "time field"), self.time)
        values = tuple(number(_get(fields, spelled, "field"), spelled[0]) for spelled in self._fields)
        return name, ts, values


def _get(fields: Any, spelled: Tuple[str, bytes], what: str) -> Any:
    value = fields.get(spelled[1])
    if value is None:
        value = fields.get(spelled[0])
        if value is None:
            raise ValueError(f"{what} {spelled[0]!r} missing: every entry needs it")
    return value


# -- arrays -------------------------------------------------------------------


class PreparedArrays(NamedTuple):
    times: np.ndarray  # int64
    codes: np.ndarray  # intp, index into names; -1 for a rejected row
    values: np.ndarray  # float64, shape (rows, fields), C order
    names: List[str]
    rejected: List[Rejected]


def prepare_arrays(
    plan: Dict[str, Any], times: Any, keys: Any, columns: Any, key_names: Optional[Sequence[Any]] = None
) -> PreparedArrays:
    """Check and convert ``add_arrays`` input; bad rows get code -1 and a Rejected naming the problem.

    ``keys`` is one key for every row (str/bytes), a 1-D array of keys, or
    integer codes into ``key_names``. Mismatched lengths or a missing
    column are an error for the whole call.
    """
    fields: Tuple[str, ...] = plan["fields"]
    if not hasattr(columns, "get"):
        raise ValueError(f"columns={_short(columns)}: expected a mapping of field -> 1-D array, for {list(fields)}")
    missing = [name for name in fields if columns.get(name) is None]
    if missing:
        raise ValueError(f"columns: missing {missing}; this window needs {list(fields)}")
    stamps = _column(times, "times")
    count = len(stamps)
    reasons: Dict[int, str] = {}
    if stamps.dtype.kind in "iu":
        ok = (stamps >= 0) & (stamps <= MAX_TIMESTAMP_MS)
        stamps_i = np.where(ok, stamps, 0).astype(np.int64)
    elif stamps.dtype.kind == "f":
        ok = np.isfinite(stamps) & (stamps >= 0) & (stamps < 2.0**63) & (stamps == np.floor(stamps))
        stamps_i = np.where(ok, stamps, 0).astype(np.int64)
    else:
        stamps_i, ok = np.zeros(count, dtype=np.int64), np.zeros(count, dtype=bool)
        for i, raw in enumerate(stamps.tolist()):
            try:
                stamps_i[i] = stamp(raw, "times")
                ok[i] = True
            except ValueError as exc:
                reasons[i] = str(exc)
    _note(reasons, ~ok, lambda i: f"times[{i}]={_short(stamps[i])}: expected integer epoch milliseconds >= 0")
    values = np.empty((count, len(fields)), dtype=np.float64)
    for j, name in enumerate(fields):
        column = _column(columns[name], name)
        if len(column) != count:
            raise ValueError(f"add_arrays: column {name!r} has {len(column)} rows, times has {count}")
        if column.dtype.kind in "iuf":
            values[:, j] = column
            good = np.isfinite(values[:, j])
        else:
            good = np.zeros(count, dtype=bool)
            for i, raw in enumerate(column.tolist()):
                try:
                    values[i, j] = number(raw, name)
                    good[i] = True
                except ValueError as exc:
                    reasons.setdefault(i, str(exc))
        _note(
            reasons,
            ~good,
            lambda i, name=name, column=column: f"field {name!r}={_short(column[i])}: expected a finite number",
        )
        ok &= good
    values += 0.0  # -0.0 -> 0.0, as the entry path stores it
    codes, names = _key_codes(keys, count, key_names, reasons)
    codes[~ok] = -1
    rejected_rows = np.flatnonzero(codes < 0)
    rejected = [Rejected(int(i), None, reasons.get(int(i), "rejected")) for i in rejected_rows.tolist()]
    return PreparedArrays(stamps_i, codes, values, names, rejected)


def _note(reasons: Dict[int, str], bad: np.ndarray, message) -> None:
    for i in np.flatnonzero(bad).tolist():
        reasons.setdefault(i, message(i))


def _column(values: Any, name: str) -> np.ndarray:
    array = np.asarray(values)
    if array.dtype.kind not in "biufO":
        array = np.asarray(values, dtype=object)
    if array.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array, got shape {array.shape}")
    return array


def _key_codes(keys: Any, count: int, key_names: Any, reasons: Dict[int, str]) -> Tuple[np.ndarray, List[str]]:
    if isinstance(keys, (str, bytes)):
        return np.zeros(count, dtype=np.intp), [key_name(keys, "keys")]
    column = _column(keys, "keys")
    if len(column) != count:
        raise ValueError(f"add_arrays: keys has {len(column)} rows, times has {count}")
    if column.dtype.kind in "iu":
        if key_names is None:
            raise ValueError("keys: integer codes need key_names= (code -> key)")
        names = [key_name(value, "key_names") for value in key_names]
        codes = column.astype(np.intp)
        bad = (codes < 0) | (codes >= len(names))
        _note(reasons, bad, lambda i: f"keys[{i}]={int(column[i])}: expected a code in [0, {len(names)})")
        codes[bad] = -1
        return codes, names
    import pandas as pd  # hash-based factorize: fast for object arrays

    try:
        codes, uniques = pd.factorize(column, use_na_sentinel=True)
    except TypeError:  # unhashable keys
        codes, uniques = np.full(count, -1, dtype=np.intp), []
    names, remap = [], []
    by_name: Dict[str, int] = {}
    for value in list(uniques):
        try:
            name = key_name(value, "keys")
        except ValueError:
            remap.append(-1)
            continue
        remap.append(by_name.setdefault(name, len(names)))
        if len(names) < len(by_name):
            names.append(name)
    mapped = np.array(remap + [-1], dtype=np.intp)[codes]
    _note(reasons, mapped < 0, lambda i: f"keys[{i}]={_short(column[i])}: expected text (str or bytes)")
    return mapped, names
