"""A window's live state (``CythonWindowState``, or ``PythonWindowState``) and the API both cores share.

Every input path returns the rows its entries made emit (``emit="final"``:
the windows that closed; ``"current"``: every window an entry updated),
so the runtime can route them to an output stream or a callback:

- ``add(fields, id=None, stream=None) -> list[dict]``: one entry; a bad
  one raises ValueError naming the field, the value and what was expected;
- ``add_entries(reply_or_entries, stream=None) -> Rows``: a read reply
  (RESP2/RESP3), a list of ``(id, fields)`` or of Messages; bad entries are
  skipped and listed in ``rows.rejected``, late ones in ``rows.late``;
- ``add_arrays(times, keys, {field: array}) -> Columns``: numpy columns
  in arrival order, for batch agents; rows out as numpy columns;
- ``advance_to(now_ms)`` (wall-clock closing for quiet keys), ``flush()``
  (end of data) -> Rows.

A row is ``{"key", "start", "end", <aggregate columns>}``. ``snapshot()``
is the whole state as JSON-able data, the same from both cores, and
``restore(snapshot)`` takes it back into either (see ``snapshot.py``).
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Protocol

import numpy as np

from streammachine._speedups import load_compiled
from streammachine.redis.entries import iter_stream_batches
from streammachine.windows import snapshot as _snapshot
from streammachine.windows._core_py import WindowCore as _PythonCore
from streammachine.windows.aggregates import R_COUNT, R_CUSTOM, R_TIME
from streammachine.windows.arrays import bad_key_reason, prepare_arrays
from streammachine.windows.values import Rejected


class Rows(list):
    """Emitted rows (dicts), plus what the batch could not count: ``late`` (entry ids) and ``rejected``."""

    def __init__(self, rows=(), late=None, rejected=None) -> None:
        super().__init__(rows)
        self.late: List[Any] = late if late is not None else []
        self.rejected: List[Rejected] = rejected if rejected is not None else []


class Columns(dict):
    """Emitted rows as numpy columns, plus ``late`` (row positions) and ``rejected`` of the input arrays."""

    def __init__(self, columns, late, rejected) -> None:
        super().__init__(columns)
        self.late: np.ndarray = late
        self.rejected: List[Rejected] = rejected

    def __len__(self) -> int:  # rows, not columns: "did anything come out" reads naturally
        return len(self["key"]) if "key" in self else 0

    def to_frame(self):
        import pandas as pd

        return pd.DataFrame(dict(self))


class _Core(Protocol):
    """What ``WindowMethods`` needs from a core (both cores have it; stated for the type checker)."""

    window: Any
    compiled: bool
    _rejected: int

    @property
    def entries(self) -> int: ...
    @property
    def late(self) -> int: ...
    @property
    def rejected(self) -> int: ...
    @property
    def keys(self) -> List[str]: ...
    def _add_one(self, fields: Any, entry_id: Any, stream: Any) -> bool: ...
    def _add_pairs(self, entries: list, stream: Any, late: list, bad: list) -> None: ...
    def _add_rows(self, times: Any, columns: Any, valid: Any, keys: Any, names: Any, late: list, bad: list) -> None: ...
    def _advance(self, now_ms: int) -> None: ...
    def _flush(self) -> None: ...
    def _take_rows(self) -> list: ...
    def _take_raw(self) -> list: ...
    def _take_columns(self) -> Dict[str, np.ndarray]: ...
    def _export(self) -> list: ...
    def _load(self, keys: list, floor: int, entries: int, late: int, rejected: int) -> None: ...
    def _floor_value(self) -> int: ...


class WindowMethods:
    """The API written once over a core's ``add``/``_add_one``/``_add_rows``/``_take_*``/``_export``/``_load``."""

    __slots__ = ()

    def add_entries(self: _Core, entries: Any, *, stream: Any = None) -> Rows:
        """Take many entries (a read reply, ``(id, fields)`` pairs or Messages), in order."""
        add_one = self._add_one
        rejected: List[Rejected] = []
        late: List[Any] = []
        if stream is not None and type(entries) is list and (not entries or type(entries[0]) is tuple):
            bad: List[Any] = []  # a read's pairs (the window stage's path): one loop in the core
            self._add_pairs(entries, stream, late, bad)
            for position, entry_id, error, counted in bad:
                self._rejected += 0 if counted else 1
                rejected.append(Rejected(position, entry_id, error))
            return Rows(self._take_rows(), late, rejected)
        position = 0
        for name, items in _batches(entries):
            source = stream if stream is not None else name
            for item in items:
                entry_id = None
                try:
                    if hasattr(item, "data") and hasattr(item, "topic"):  # a Message
                        entry_id, fields = item.data if item.data else (getattr(item, "key", None), {})
                        if add_one(fields, entry_id, stream if stream is not None else item.topic):
                            late.append(entry_id)
                    else:
                        entry_id, fields = item
                        if add_one(fields, entry_id, source):
                            late.append(entry_id)
                except (ValueError, TypeError) as exc:
                    if not isinstance(exc, ValueError):  # not a (id, fields) pair: counted here
                        self._rejected += 1
                    rejected.append(Rejected(position, entry_id, str(exc)))
                position += 1
        return Rows(self._take_rows(), late, rejected)

    def add_arrays(self: _Core, times: Any, keys: Any, columns: Dict[str, Any], *, key_names: Any = None) -> Columns:
        """Take rows given as arrays in arrival order: event times (ms), keys, and one array per field.

        ``keys`` is one key for all rows, a 1-D array of keys, or integer
        codes with ``key_names``. Bad rows are skipped and listed in
        ``rejected``; returns the emitted rows as columns.
        """
        prepared = prepare_arrays(self.window.plan, times, keys, columns, key_names)
        late: List[int] = []
        bad_keys: List[int] = []
        self._add_rows(prepared.times, prepared.columns, prepared.valid, prepared.keys, prepared.names, late, bad_keys)
        reasons = prepared.reasons
        for row in bad_keys:
            reasons[row] = bad_key_reason(prepared.keys, row)
        rejected = [Rejected(row, None, reasons[row]) for row in sorted(reasons)]
        self._rejected += len(rejected)
        return Columns(self._take_columns(), np.asarray(late, dtype=np.intp), rejected)

    def advance_to(self: _Core, now_ms: Any) -> Rows:
        """Close, for every key, what a clock at ``now_ms`` (minus grace) has passed; returns the rows."""
        if isinstance(now_ms, bool) or not isinstance(now_ms, (int, np.integer)) or not 0 <= now_ms < 2**63:
            raise ValueError(f"now_ms={now_ms!r}: expected integer epoch milliseconds in [0, 2**63)")
        self._advance(int(now_ms))
        return Rows(self._take_rows())

    def flush(self: _Core) -> Rows:
        """End of data: emit every open window (and bar in progress); entries after it are late."""
        self._flush()
        return Rows(self._take_rows())

    def _take_columns(self: _Core) -> Dict[str, np.ndarray]:
        """The pending output as columns (the compiled core has its own, filled in C)."""
        raw = self._take_raw()
        names = ("key", "start", "end") + self.window.plan["columns"]
        dtypes = [object, np.int64, np.int64] + [_dtype(op) for op, _, _ in self.window.plan["results"]]
        columns = list(zip(*raw)) if raw else [()] * len(names)
        out = {}
        for name, dtype, values in zip(names, dtypes, columns):
            if dtype is object:
                array = np.empty(len(values), dtype=object)
                array[:] = list(values)
            else:
                array = np.array(values, dtype=dtype)
            out[name] = array
        return out

    # -- snapshots -------------------------------------------------------------

    def snapshot(self: _Core) -> Dict[str, Any]:
        """The whole state as plain JSON-able data, the same for both cores."""
        return _snapshot.build(self)

    def restore(self: _Core, snapshot: Any) -> None:
        """Replace the whole state with ``snapshot`` (a dict or its JSON) from either core.

        It must come from the same window (kind, sizes, key, time, grace,
        emit, aggregates); a bad snapshot raises ValueError and leaves the
        state as it was.
        """
        self._load(*_snapshot.parse(snapshot, self))

    def stats(self: _Core) -> Dict[str, Any]:
        return {
            "implementation": "cython" if self.compiled else "python",
            "window": self.window.describe(),
            "keys": len(self.keys),
            "entries": self.entries,
            "late": self.late,
            "rejected": self.rejected,
        }

    def __repr__(self: _Core) -> str:
        return f"{type(self).__name__}({self.window!r}, keys={len(self.keys)}, entries={self.entries})"


def _dtype(op: int):
    if op in (R_COUNT, R_TIME):
        return np.int64
    return object if op == R_CUSTOM else np.float64


def _batches(entries: Any):
    if isinstance(entries, list) and entries and hasattr(entries[0], "data") and hasattr(entries[0], "topic"):
        yield None, entries  # a batch agent's list of Messages
        return
    yield from iter_stream_batches(entries)


class PythonWindowState(_PythonCore, WindowMethods):
    """A window's aggregator on the pure-Python core."""

    __slots__ = ()
    compiled = False


_compiled = load_compiled("_windows")
if _compiled is None:  # not built, or out of date: the Python core serves
    CythonWindowState = None
else:
    _CompiledCore: Any = _compiled.WindowCore

    class CythonWindowState(_CompiledCore, WindowMethods):  # type: ignore[no-redef]
        """A window's aggregator on the compiled core."""

        __slots__ = ()  # no instance dict: nothing to look up before each C-level call
        compiled = True


def window_state_class(pure_python: Optional[bool] = None, custom_reducers: bool = False):
    """The compiled class when built and not declined (``STREAMMACHINE_PURE_PYTHON=1`` declines), else Python.

    Windows with custom reducers (``Reduce``) run Python code per entry anyway: they get the Python core.
    """
    if pure_python is None:
        from streammachine.config import Settings

        pure_python = Settings.read("pure_python")  # read when used: setting it after import counts
    if CythonWindowState is not None and not pure_python and not custom_reducers:
        return CythonWindowState
    return PythonWindowState
