"""Aggregates a window computes, and the slot layout both cores run them on.

Every built-in aggregate is a combination of a few primitives kept per
window (a count, sums, a product sum, min, max, first and last by time,
Welford's mean and M2), so the compiled core runs a short list of numeric
update ops and a short list of result ops, the same ones the Python core
runs. First and last are by event time; ties go by arrival (the first
arrival opens, the last closes), as in FastOHLC.

Custom reducers (``Reduce``) keep one Python object per window: the list
of ``[ts, value]`` pairs for a plain function, or the state of an
init/add/merge trio. Their states go into snapshots, so they must be
JSON-able.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Dict, List, Optional, Tuple

# update ops: (op, slot, slot2, field, field2); slots index a window record [n, d..., t..., o...]
OP_SUM, OP_PSUM, OP_MIN, OP_MAX, OP_FIRST, OP_LAST, OP_WELFORD, OP_CUSTOM = range(8)
# result ops: (op, slot, arg)
R_COUNT, R_VALUE, R_DIV, R_MEAN, R_VAR, R_STD, R_TIME, R_CUSTOM = range(8)

INT64_MAX = 2**63 - 1


class Aggregate:
    """One aggregate of a window; ``Window(...).agg(name=Aggregate(...))``."""

    fields: Tuple[str, ...] = ()
    default_name = "value"

    def columns(self, name: Optional[str]) -> List[str]:
        """Column names: a keyword name as is; a positional aggregate gets its default name."""
        return [name or self.default_name]

    def _plan(self, layout: Layout) -> List[tuple]:  # pragma: no cover - every aggregate overrides it
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(repr(f) for f in self.fields)
        return f"{type(self).__name__}({args})"


def _field(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what}={value!r}: expected a field name (non-empty str)")
    return value


class Count(Aggregate):
    """Entries in the window."""

    default_name = "count"

    def _plan(self, layout):
        return [(R_COUNT, 0, 0)]


class _OneField(Aggregate):
    op = OP_SUM
    result = R_VALUE
    prefix = ""

    def __init__(self, field: str) -> None:
        self.fields = (_field(field, f"{type(self).__name__} field"),)

    @property
    def default_name(self) -> str:  # type: ignore[override]
        return f"{self.prefix}_{self.fields[0]}"

    def _plan(self, layout):
        if self.op in (OP_FIRST, OP_LAST):
            slot, stamp = layout.double(), layout.stamp(INT64_MAX if self.op == OP_FIRST else -1)
            layout.update(self.op, slot, stamp, self.fields[0])
            return [(R_VALUE, slot, 0)]
        init = {OP_MIN: math.inf, OP_MAX: -math.inf}.get(self.op, 0.0)
        slot = layout.double(init)
        layout.update(self.op, slot, 0, self.fields[0])
        return [(self.result, slot, 0)]


class Sum(_OneField):
    prefix = "sum"


class Mean(_OneField):
    result = R_MEAN
    prefix = "mean"


class Min(_OneField):
    op = OP_MIN
    prefix = "min"


class Max(_OneField):
    op = OP_MAX
    prefix = "max"


class First(_OneField):
    """The value of the earliest entry by time (first arrival on ties)."""

    op = OP_FIRST
    prefix = "first"


class Last(_OneField):
    """The value of the latest entry by time (last arrival on ties)."""

    op = OP_LAST
    prefix = "last"


class Var(Aggregate):
    """Variance (``ddof=1`` like pandas: NaN for a window of one entry)."""

    prefix = "var"
    result = R_VAR

    def __init__(self, field: str, ddof: int = 1) -> None:
        self.fields = (_field(field, f"{type(self).__name__} field"),)
        if isinstance(ddof, bool) or not isinstance(ddof, int) or ddof < 0:
            raise ValueError(f"ddof={ddof!r}: expected an integer >= 0")
        self.ddof = ddof

    @property
    def default_name(self) -> str:  # type: ignore[override]
        return f"{self.prefix}_{self.fields[0]}"

    def _plan(self, layout):
        mean = layout.double()
        layout.double()  # M2, right after the mean
        layout.update(OP_WELFORD, mean, 0, self.fields[0])
        return [(self.result, mean, self.ddof)]


class Std(Var):
    prefix = "std"
    result = R_STD


class VWAP(Aggregate):
    """Volume-weighted average price: sum(price * qty) / sum(qty) (NaN when sum(qty) is 0)."""

    default_name = "vwap"

    def __init__(self, price: str, qty: str) -> None:
        self.fields = (_field(price, "VWAP price"), _field(qty, "VWAP qty"))

    def _plan(self, layout):
        notional, volume = layout.double(), layout.double()
        layout.update(OP_PSUM, notional, 0, self.fields[0], self.fields[1])
        layout.update(OP_SUM, volume, 0, self.fields[1])
        return [(R_DIV, notional, volume)]


class OHLC(Aggregate):
    """A candle: open/high/low/close of ``price`` (open and close by time, as FastOHLC), ``volume``
    (sum of ``qty``, when given), ``timestamp_ms`` (time of the latest entry) and ``trade_count``.

    Positional (``.agg(OHLC("price", "qty"))``) its columns are the Candle
    field names; under a keyword name ``c`` they are ``c_open``, ``c_high``...
    """

    def __init__(self, price: str, qty: Optional[str] = None) -> None:
        self.fields = (_field(price, "OHLC price"),) + (() if qty is None else (_field(qty, "OHLC qty"),))

    def _parts(self) -> List[str]:
        parts = ["open", "high", "low", "close"] + (["volume"] if len(self.fields) == 2 else [])
        return parts + ["timestamp_ms", "trade_count"]

    def columns(self, name):
        return [f"{name}_{part}" if name else part for part in self._parts()]

    def _plan(self, layout):
        price = self.fields[0]
        first, first_ts = layout.double(), layout.stamp(INT64_MAX)
        high, low = layout.double(-math.inf), layout.double(math.inf)
        last, last_ts = layout.double(), layout.stamp(-1)
        layout.update(OP_FIRST, first, first_ts, price)
        layout.update(OP_MAX, high, 0, price)
        layout.update(OP_MIN, low, 0, price)
        layout.update(OP_LAST, last, last_ts, price)
        results = [(R_VALUE, first, 0), (R_VALUE, high, 0), (R_VALUE, low, 0), (R_VALUE, last, 0)]
        if len(self.fields) == 2:
            volume = layout.double()
            layout.update(OP_SUM, volume, 0, self.fields[1])
            results.append((R_VALUE, volume, 0))
        return results + [(R_TIME, last_ts, 0), (R_COUNT, 0, 0)]


class Reduce(Aggregate):
    """A custom reducer over one field's values.

    ``Reduce("price", fn)``: ``fn(values)`` over the window's values in time
    order (arrival order on ties), called when the row is emitted.

    ``Reduce("price", init=..., add=..., merge=..., result=...)``: ``init()``
    makes a state, ``add(state, value)`` returns it with one more value,
    ``merge(older, newer)`` returns the two combined (needed by session and
    sliding windows; it must not change its arguments), ``result(state)``
    gives the column's value (default: the state). States go into
    snapshots: keep them JSON-able (numbers, lists, dicts).
    """

    def __init__(
        self,
        field: str,
        fn: Optional[Callable[[list], Any]] = None,
        *,
        init: Optional[Callable[[], Any]] = None,
        add: Optional[Callable[[Any, float], Any]] = None,
        merge: Optional[Callable[[Any, Any], Any]] = None,
        result: Optional[Callable[[Any], Any]] = None,
        name: Optional[str] = None,
    ) -> None:
        self.fields = (_field(field, "Reduce field"),)
        if fn is not None:
            if not callable(fn) or init is not None or add is not None or merge is not None:
                raise ValueError("Reduce: give either fn(values) or init=/add=/merge=, not both")
            self.reducer: Any = _ValuesReducer(fn)
        else:
            if not (callable(init) and callable(add)):
                raise ValueError("Reduce: expected fn(values), or callables init=() and add=(state, value)")
            self.reducer = _TrioReducer(init, add, merge, result)
        self.default_name = name or getattr(fn or add, "__name__", "reduce").strip("<>") or "reduce"

    def _plan(self, layout):
        slot = layout.custom(self.reducer)
        layout.update(OP_CUSTOM, slot, 0, self.fields[0])
        return [(R_CUSTOM, slot, 0)]


class _ValuesReducer:
    """The state is ``[[ts, value], ...]`` in arrival order; ``fn`` sees the values sorted by time."""

    __slots__ = ("fn",)
    merges = True

    def __init__(self, fn):
        self.fn = fn

    def init(self):
        return []

    def add(self, state, value, ts):
        state.append([ts, value])
        return state

    def merge(self, older, newer):
        return older + newer

    def result(self, state):
        return self.fn([value for _, value in sorted(state, key=_time_of)])


def _time_of(pair):
    return pair[0]


class _TrioReducer:
    __slots__ = ("_init", "_add", "_merge", "_result")

    def __init__(self, init, add, merge, result):
        self._init, self._add, self._merge, self._result = init, add, merge, result

    @property
    def merges(self) -> bool:
        return self._merge is not None

    def init(self):
        return self._init()

    def add(self, state, value, ts):
        return self._add(state, value)

    def merge(self, older, newer):
        return self._merge(older, newer)

    def result(self, state):
        return state if self._result is None else self._result(state)


class Layout:
    """Where each aggregate keeps its primitives in a window record, and how results are read back.

    A record is a flat list ``[n, d_0 .. d_{D-1}, t_0 .. t_{T-1}, o_0 .. o_{O-1}]``:
    the entry count, doubles, int64 times and custom objects. Slots are
    numbered within their kind here; ``finalise`` turns them into record
    positions.
    """

    def __init__(self) -> None:
        self.fields: List[str] = []
        self.d_init: List[float] = []
        self.t_init: List[int] = []
        self.customs: List[Any] = []
        self._ops: List[tuple] = []

    def double(self, init: float = 0.0) -> int:
        self.d_init.append(init)
        return len(self.d_init) - 1

    def stamp(self, init: int) -> int:
        self.t_init.append(init)
        return len(self.t_init) - 1

    def custom(self, reducer: Any) -> int:
        self.customs.append(reducer)
        return len(self.customs) - 1

    def field_index(self, name: str) -> int:
        if name not in self.fields:
            self.fields.append(name)
        return self.fields.index(name)

    def update(self, op: int, slot: int, slot2: int, field: str, field2: Optional[str] = None) -> None:
        self._ops.append((op, slot, slot2, self.field_index(field), -1 if field2 is None else self.field_index(field2)))

    def positions(self, ops: List[tuple], results: List[tuple]) -> Tuple[tuple, tuple]:
        """The update and result ops with slots turned into record positions."""
        d0, t0 = 1, 1 + len(self.d_init)
        o0 = t0 + len(self.t_init)
        updates = []
        for op, slot, slot2, f1, f2 in ops:
            if op == OP_CUSTOM:
                updates.append((op, o0 + slot, slot, f1, f2))
            elif op in (OP_FIRST, OP_LAST):
                updates.append((op, d0 + slot, t0 + slot2, f1, f2))
            else:
                updates.append((op, d0 + slot, 0, f1, f2))
        out = []
        for op, slot, arg in results:
            if op == R_CUSTOM:
                out.append((op, o0 + slot, slot))
            elif op == R_TIME:
                out.append((op, t0 + slot, arg))
            elif op == R_DIV:
                out.append((op, d0 + slot, d0 + arg))
            elif op == R_COUNT:
                out.append((op, 0, 0))
            else:
                out.append((op, d0 + slot, arg))
        return tuple(updates), tuple(out)


def plan_aggregates(aggregates: List[Tuple[Optional[str], Aggregate]]) -> Dict[str, Any]:
    """Columns, fields and ops for ``(name or None, aggregate)`` pairs, in the order given."""
    layout = Layout()
    columns: List[str] = []
    results: List[tuple] = []
    for name, aggregate in aggregates:
        if not isinstance(aggregate, Aggregate):
            raise ValueError(
                f"aggregate {name or ''}={aggregate!r}: expected Count(), Sum(field), Mean(field), VWAP(price, qty), "
                "OHLC(price[, qty]), Reduce(field, fn)..."
            )
        planned = aggregate._plan(layout)
        names = aggregate.columns(name)
        assert len(names) == len(planned)
        columns.extend(names)
        results.extend(planned)
    updates, outs = layout.positions(layout._ops, results)
    return {
        "columns": tuple(columns),
        "fields": tuple(layout.fields),
        "d_init": tuple(layout.d_init),
        "t_init": tuple(layout.t_init),
        "customs": tuple(layout.customs),
        "updates": updates,
        "results": outs,
    }
