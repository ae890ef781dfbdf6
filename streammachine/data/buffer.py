"""TimeSeriesBuffer: the recent rows of a stream, held column-wise in numpy arrays.

Why not a DataFrame and ``pd.concat``: concatenating the whole buffer on
every append copies every held row, so appending row by row is O(n) per row.
Here each column is a preallocated numpy array that grows by doubling; rows
are written in place and old rows are dropped by moving a start index, so an
append costs O(rows appended), amortised. The arrays are compacted (live rows
moved to the front) only when full.

Age is measured in data time: a row is kept while it is at most
``max_age_seconds`` older than the NEWEST timestamp seen, not the wall clock.
So a replay of last week's data keeps a proper window, and a quiet stream
keeps its last window on screen instead of emptying. Rows are held sorted by
timestamp (rows with equal timestamps keep their arrival order); a row older
than those held is inserted in place, which costs the rows after it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Dict, Optional, Tuple

import numpy as np
import pandas as pd
from pandas.api.extensions import ExtensionArray

from streammachine._validate import check_positive

_MIN_CAPACITY = 64
# scalar types a one-row append may write into a column of each numpy kind without changing it
_INTS = frozenset((int, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32))
_FLOATS = frozenset((float, np.float16, np.float32, np.float64))
_FITS = {"i": _INTS, "f": _FLOATS | _INTS, "b": frozenset((bool, np.bool_))}
_NUMBERS = _FLOATS | _INTS


class _Column:
    """One column's storage and, for pandas extension dtypes (str, category, Int64...), the dtype to restore."""

    __slots__ = ("values", "kind", "pandas_dtype")

    def __init__(self, values: np.ndarray, pandas_dtype: Any) -> None:
        self.replace(values)
        self.pandas_dtype = pandas_dtype

    def replace(self, values: np.ndarray) -> None:
        self.values = values
        self.kind = values.dtype.kind  # looked up on every one-row append


class TimeSeriesBuffer:
    """In-memory buffer of recent rows with automatic pruning by age and row count.

    ``append`` takes a DataFrame (its index is ignored), or a mapping of
    column -> value (one row) or column -> sequence (many rows). Each row
    needs ``timestamp_column`` in epoch milliseconds. Columns may come and go
    between appends: rows without a column get NaN/None there.
    """

    def __init__(self, max_age_seconds: float, timestamp_column: str = "timestamp_ms", max_rows: Optional[int] = None):
        check_positive("max_age_seconds", max_age_seconds, expected="a finite number of seconds > 0")
        max_rows = check_positive("max_rows", max_rows, integer=True, optional=True)
        self.max_age_seconds = float(max_age_seconds)
        self.timestamp_column = timestamp_column
        self.max_rows = max_rows
        self._max_age_ms = self.max_age_seconds * 1000.0
        self.clear()

    # -- reading -------------------------------------------------------------

    def __len__(self) -> int:
        return self._end - self._start

    @property
    def last_timestamp(self) -> Optional[float]:
        """The newest timestamp appended since creation or ``clear()`` (None before any)."""
        return self._newest

    def get(self) -> pd.DataFrame:
        """A copy of the held rows, oldest first (before any row: an empty frame with the timestamp column)."""
        if not self._columns:
            return pd.DataFrame({self.timestamp_column: np.array([], dtype=np.int64)})
        window = slice(self._start, self._end)
        return pd.DataFrame(
            {
                name: _restore(column.values[window].copy(), column.pandas_dtype)
                for name, column in self._columns.items()
            },
            index=pd.RangeIndex(len(self)),
        )

    def clear(self) -> None:
        self._columns: Dict[Any, _Column] = {}
        self._start = self._end = self._capacity = 0
        self._newest: Optional[float] = None

    def __repr__(self) -> str:
        return (
            f"TimeSeriesBuffer(rows={len(self)}, max_age_seconds={self.max_age_seconds}, "
            f"max_rows={self.max_rows}, last_timestamp={self._newest})"
        )

    # -- appending -----------------------------------------------------------

    def append(self, data: Any) -> None:
        row = _single_row(data)
        if row is not None and self._append_row_in_order(*row):
            return
        incoming, pandas_dtypes, count = _as_columns(data)
        if count == 0:
            return
        stamps = self._timestamps(incoming)
        newest = stamps.max().item()
        if self._newest is not None and self._newest > newest:
            newest = self._newest
        cutoff = newest - self._max_age_ms
        keep = stamps >= cutoff
        if not keep.all():
            incoming = {name: values[keep] for name, values in incoming.items()}
            stamps = stamps[keep]
        if len(stamps) > 1 and (stamps[1:] < stamps[:-1]).any():
            order = np.argsort(stamps, kind="stable")
            incoming = {name: values[order] for name, values in incoming.items()}
            stamps = stamps[order]
        self._newest = newest
        self._drop_older_than(cutoff)
        if len(stamps):
            self._insert(incoming, pandas_dtypes, stamps)
        self._enforce_max_rows()

    def _timestamps(self, incoming: Dict[Any, np.ndarray]) -> np.ndarray:
        stamps = incoming.get(self.timestamp_column)
        if stamps is None:
            raise ValueError(
                f"appended rows have no {self.timestamp_column!r} column (columns: {list(incoming)}); "
                "expected epoch milliseconds there"
            )
        if stamps.dtype.kind == "O":
            try:
                stamps = incoming[self.timestamp_column] = stamps.astype(np.float64)
            except (TypeError, ValueError):
                pass
        if stamps.dtype.kind not in "iuf":
            raise ValueError(
                f"column {self.timestamp_column!r} holds {stamps.dtype} values (first: {stamps[0]!r}): "
                "expected epoch milliseconds (int or float)"
            )
        if stamps.dtype.kind == "f" and not np.isfinite(stamps).all():
            raise ValueError(f"column {self.timestamp_column!r} holds NaN/inf: expected epoch milliseconds")
        return stamps

    def _append_row_in_order(self, row: Mapping, pandas_dtypes: Optional[Dict[Any, Any]]) -> bool:
        """The common case in O(1), straight from the scalars: one row, not older than the held
        ones, the same columns, values that fit their columns as they are. False: take the general path."""
        columns = self._columns
        if self._end == self._start or self._end == self._capacity or len(row) != len(columns):
            return False
        stamp: Any = row.get(self.timestamp_column)  # checked to be a number just below
        newest = self._newest
        if newest is None or type(stamp) not in _NUMBERS or not stamp >= newest:  # (NaN fails >=)
            return False
        for name, value in row.items():
            column = columns.get(name)
            if column is None:
                return False
            kind = column.kind
            if kind != "O" and type(value) not in _FITS.get(kind, ()):
                return False
            incoming = None if pandas_dtypes is None else pandas_dtypes[name]
            if column.pandas_dtype is not incoming and not _same_dtype(column.pandas_dtype, incoming, value):
                return False
        end = self._end
        try:
            for name, value in row.items():
                columns[name].values[end] = value
        except (OverflowError, ValueError, TypeError):  # e.g. an int beyond int64: the general path widens
            return False  # what was written lies past the end: not held
        self._end = end + 1
        newest = stamp.item() if isinstance(stamp, np.generic) else stamp
        self._newest = newest
        self._drop_older_than(newest - self._max_age_ms)
        self._enforce_max_rows()
        return True

    def _drop_older_than(self, cutoff: float) -> None:
        if self._end > self._start:
            held = self._columns[self.timestamp_column].values
            if held[self._start] < cutoff:  # rows are sorted: the stale ones are a prefix
                self._start += int(np.searchsorted(held[self._start : self._end], cutoff, side="left"))

    def _enforce_max_rows(self) -> None:
        if self.max_rows is not None and self._end - self._start > self.max_rows:
            self._start = self._end - self.max_rows

    def _insert(self, incoming: Dict[Any, np.ndarray], pandas_dtypes: Dict[Any, Any], stamps: np.ndarray) -> None:
        count = len(stamps)
        self._reserve(count)
        live = self._end - self._start
        for name in self._columns.keys() - incoming.keys():
            column = self._columns[name]
            column.replace(_holding_missing(column.values))
            incoming[name] = np.full(count, _missing_value(column.values.dtype), dtype=column.values.dtype)
        for name, values in incoming.items():
            self._fit_column(name, values, pandas_dtypes.get(name), live)
        held = self._columns[self.timestamp_column].values
        start, end = self._start, self._end
        if live == 0 or stamps[0] >= held[end - 1]:
            for name, values in incoming.items():
                self._columns[name].values[end : end + count] = values
        else:  # older rows: merge them into the tail they belong in, stably (held rows first on ties)
            position = start + int(np.searchsorted(held[start:end], stamps[0], side="right"))
            order = np.argsort(np.concatenate([held[position:end], stamps]), kind="stable")
            for name, values in incoming.items():
                target = self._columns[name].values
                target[position : end + count] = np.concatenate([target[position:end], values])[order]
        self._end = end + count

    def _reserve(self, count: int) -> None:
        """Room for ``count`` more rows at the end: compact, growing to twice what is needed."""
        if self._end + count <= self._capacity:
            return
        live = self._end - self._start
        capacity = max(_MIN_CAPACITY, 2 * (live + count))
        for column in self._columns.values():
            grown = np.empty(capacity, dtype=column.values.dtype)
            grown[:live] = column.values[self._start : self._end]
            column.replace(grown)
        self._start, self._end, self._capacity = 0, live, capacity

    def _fit_column(self, name: Any, values: np.ndarray, pandas_dtype: Any, live: int) -> None:
        """Create the column, or widen its dtype, so ``values`` can be written into it."""
        column = self._columns.get(name)
        if column is None:
            dtype = _dtype_holding_missing(values.dtype) if live else values.dtype
            storage = np.empty(self._capacity, dtype=dtype)
            if live:
                storage[self._start : self._end] = _missing_value(dtype)
            self._columns[name] = _Column(storage, pandas_dtype)
            return
        if column.pandas_dtype is not None and column.pandas_dtype != pandas_dtype:
            column.pandas_dtype = None  # mixed origins: keep plain objects
        dtype = _common_dtype(column.values.dtype, values.dtype)
        if dtype != column.values.dtype:
            column.replace(column.values.astype(dtype))


def _as_columns(data: Any) -> Tuple[Dict[Any, np.ndarray], Dict[Any, Any], int]:
    """Appended data as {column: 1-D array}, {column: pandas dtype to restore}, row count."""
    if isinstance(data, pd.DataFrame):
        names, arrays, count = list(data.columns), _frame_arrays(data), len(data)
    elif isinstance(data, Mapping):
        if not data:
            return {}, {}, 0
        names, arrays = list(data.keys()), list(data.values())
        sequences = [v for v in arrays if _is_sequence(v)]
        if sequences:
            count = len(sequences[0])
            for name, values in data.items():
                if not _is_sequence(values) or len(values) != count:
                    raise ValueError(
                        f"column {name!r}: expected {count} values like the other columns, got {values!r:.80} "
                        "(one row: a scalar per column; many rows: an equally long sequence per column)"
                    )
        else:
            arrays, count = [[v] for v in arrays], 1
    else:
        raise ValueError(
            f"TimeSeriesBuffer.append expects a DataFrame, or a mapping of column -> value(s); got {type(data).__name__}"
        )
    columns, pandas_dtypes = {}, {}
    for name, values in zip(names, arrays):
        if isinstance(values, pd.Series):
            values = values.array
        if isinstance(values, ExtensionArray) and not isinstance(values.dtype, np.dtype):
            pandas_dtypes[name] = values.dtype
            values = np.asarray(values, dtype=object)
        else:
            values = np.asarray(values)
        if values.dtype.kind in "USV":  # text as Python objects, not fixed-width numpy strings
            values = values.astype(object)
        columns[name] = values
    return columns, pandas_dtypes, count


def _single_row(data: Any) -> Optional[Tuple[Mapping, Optional[Dict[Any, Any]]]]:
    """(column -> scalar, column -> pandas extension dtype) for one-row appends, else None."""
    if isinstance(data, pd.DataFrame):
        if len(data) != 1:
            return None
        names, arrays = data.columns.tolist(), _frame_arrays(data)
        return (
            {name: values[0] for name, values in zip(names, arrays)},
            {name: None if type(values) is np.ndarray else values.dtype for name, values in zip(names, arrays)},
        )
    if type(data) is dict and not any(_is_sequence(v) for v in data.values()):
        return data, None
    return None


def _frame_arrays(frame: pd.DataFrame) -> list:
    # DataFrame.items() builds a Series per column (~5 us each), which would
    # dominate one-row appends; _iter_column_arrays hands out the arrays
    # directly. It is private, so fall back to the public path if it goes away.
    iterate = getattr(frame, "_iter_column_arrays", None)
    if iterate is not None:
        return list(iterate())
    return [series.array for _, series in frame.items()]


def _same_dtype(held: Any, incoming: Any, value: Any) -> bool:
    """Whether a value from ``incoming`` may go into a column restored as ``held`` as it is."""
    if held is incoming or held == incoming:
        return True
    # text: an object column of str reads back with pandas' str dtype whether it came as str dtype or not
    return (
        type(value) is str
        and isinstance(held, (pd.StringDtype, type(None)))
        and isinstance(incoming, (pd.StringDtype, type(None)))
    )


def _is_sequence(value: Any) -> bool:
    return isinstance(value, (list, tuple, np.ndarray, pd.Series, ExtensionArray))


def _common_dtype(held: np.dtype, incoming: np.dtype) -> np.dtype:
    if held == incoming:
        return held
    if (held.kind in "iuf" and incoming.kind in "iuf") or (held.kind == incoming.kind and held.kind in "mM"):
        return np.result_type(held, incoming)
    return np.dtype(object)


def _dtype_holding_missing(dtype: np.dtype) -> np.dtype:
    if dtype.kind in "iu":
        return np.dtype(np.float64)
    if dtype.kind in "fcmMO":
        return dtype
    return np.dtype(object)


def _holding_missing(values: np.ndarray) -> np.ndarray:
    dtype = _dtype_holding_missing(values.dtype)
    return values if dtype == values.dtype else values.astype(dtype)


def _missing_value(dtype: np.dtype) -> Any:
    if dtype.kind in "fc":
        return np.nan
    if dtype.kind in "mM":
        return np.array("NaT", dtype=dtype)
    return None


def _restore(values: np.ndarray, pandas_dtype: Any) -> Any:
    if pandas_dtype is None:
        return values
    try:
        return pd.array(values, dtype=pandas_dtype)
    except (TypeError, ValueError):
        return values
