"""``Window``: what to aggregate, over which windows, per which key, by which clock.

A Window is an immutable description; ``.agg(...)`` adds aggregates and
``.start()`` makes the stateful aggregator (a ``CythonWindowState`` or ``PythonWindowState``) that takes
entries and hands back the rows it emits.

Kinds (all per key, all by event time):

- ``tumbling(size)``: ``[start, start + size)``, aligned to the epoch;
- ``hopping(size, step)``: windows of ``size`` starting every ``step``
  (size a multiple of step), so each entry is in ``size / step`` windows;
- ``sliding(size)``: one row per entry over the entries of its key in
  ``(ts - size, ts]`` (pandas ``rolling("...ms")``); ``sliding(entries=N)``:
  over the last N entries (pandas ``rolling(N, min_periods=1)``);
- ``session(gap)``: entries at most ``gap`` ms apart form one session;
- ``count_bars(n)``, ``volume_bars(units, qty)``, ``dollar_bars(units,
  price, qty)``: a bar closes with the entry that brings its entry count,
  ``sum(qty)`` or ``sum(price * qty)`` to the threshold or beyond.

Time and closing: a key's clock is the latest event time it has seen (or
the time given to ``advance_to``, for quiet keys); its watermark is the
clock minus ``grace_ms``. A window closes when the watermark passes it
(tumbling/hopping: ``end <= watermark``; session: ``last + gap <
watermark``); sliding windows and bars take entries in time order once the
watermark reaches them. An entry that belongs to something already closed
is late: counted and reported (``late`` in every batch result and in
``stats()``), never silently added or dropped. Entries no more than
``grace_ms`` behind their key's clock are never late.

Emission: ``emit="final"`` emits each window once, when it closes;
``emit="current"`` emits a window's row every time an entry updates it.
Sliding windows emit one row per entry, final when emitted, so both modes
behave the same there.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

from streammachine.redis.entries import MAX_TIMESTAMP_MS, _short
from streammachine.windows.aggregates import Aggregate, plan_aggregates

K_BUCKETS, K_SESSION, K_SLIDE_TIME, K_SLIDE_COUNT, K_BARS = range(5)
M_COUNT, M_FIELD, M_PRODUCT = range(3)
KIND_NAMES = {
    K_BUCKETS: "buckets",
    K_SESSION: "session",
    K_SLIDE_TIME: "sliding",
    K_SLIDE_COUNT: "sliding_entries",
    K_BARS: "bars",
}
RESERVED = ("key", "start", "end")


def _ms(value: Any, what: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= MAX_TIMESTAMP_MS:
        raise ValueError(f"{what}={_short(value)}: expected an integer number of milliseconds >= {minimum}")
    return int(value)


def _units(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
        raise ValueError(f"{what}={_short(value)}: expected a finite number > 0")
    return float(value)


def _name(value: Any, what: str, optional: bool = False) -> Optional[str]:
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what}={_short(value)}: expected a field name (non-empty str)")
    return value


class Window:
    """A window description. Build one with a class method, then ``.agg(...)`` and ``.start()``::

    w = Window.tumbling(60_000, key="symbol").agg(n=Count(), vwap=VWAP("price", "qty"))
    state = w.start()
    rows = state.add({"symbol": "AAPL", "price": 101.5, "qty": 10}, id="1700000000000-0")
    """

    __slots__ = ("_kind", "_params", "_key", "_time", "_grace", "_emit", "_aggregates", "_plan")

    def __init__(self, kind: int, params: Dict[str, Any], key: Any, time: Any, grace_ms: Any, emit: Any) -> None:
        self._kind = kind
        self._params = params
        self._key = _name(key, "key", optional=True)
        self._time = _name(time, "time")
        self._grace = _ms(grace_ms, "grace_ms", minimum=0)
        if emit not in ("final", "current"):
            raise ValueError(f"emit={_short(emit)}: expected 'final' (once, on close) or 'current' (every update)")
        self._emit = emit
        self._aggregates: Tuple[Tuple[Optional[str], Aggregate], ...] = ()
        self._plan: Optional[Dict[str, Any]] = None

    # -- kinds -----------------------------------------------------------------

    @classmethod
    def tumbling(cls, size_ms: int, *, key=None, time="id", grace_ms=0, emit="final") -> Window:
        size = _ms(size_ms, "size_ms")
        return cls(K_BUCKETS, {"size": size, "step": size}, key, time, grace_ms, emit)

    @classmethod
    def hopping(cls, size_ms: int, step_ms: int, *, key=None, time="id", grace_ms=0, emit="final") -> Window:
        size, step = _ms(size_ms, "size_ms"), _ms(step_ms, "step_ms")
        if size % step:
            raise ValueError(f"hopping: size_ms={size} is not a multiple of step_ms={step}; expected size = k * step")
        return cls(K_BUCKETS, {"size": size, "step": step}, key, time, grace_ms, emit)

    @classmethod
    def sliding(
        cls, size_ms: Optional[int] = None, *, entries=None, key=None, time="id", grace_ms=0, emit="final"
    ) -> Window:
        if (size_ms is None) == (entries is None):
            raise ValueError("sliding: give size_ms (the last N ms) or entries= (the last N entries), one of them")
        if entries is not None:
            return cls(K_SLIDE_COUNT, {"count": _ms(entries, "entries")}, key, time, grace_ms, emit)
        return cls(K_SLIDE_TIME, {"size": _ms(size_ms, "size_ms")}, key, time, grace_ms, emit)

    @classmethod
    def session(cls, gap_ms: int, *, key=None, time="id", grace_ms=0, emit="final") -> Window:
        return cls(K_SESSION, {"gap": _ms(gap_ms, "gap_ms", minimum=0)}, key, time, grace_ms, emit)

    @classmethod
    def count_bars(cls, entries: int, *, key=None, time="id", grace_ms=0, emit="final") -> Window:
        n = _ms(entries, "entries")
        return cls(K_BARS, {"measure": M_COUNT, "threshold": float(n), "by": ()}, key, time, grace_ms, emit)

    @classmethod
    def volume_bars(cls, units: float, qty: str, *, key=None, time="id", grace_ms=0, emit="final") -> Window:
        by = (_name(qty, "qty"),)
        params = {"measure": M_FIELD, "threshold": _units(units, "units"), "by": by}
        return cls(K_BARS, params, key, time, grace_ms, emit)

    @classmethod
    def dollar_bars(
        cls, units: float, price: str, qty: str, *, key=None, time="id", grace_ms=0, emit="final"
    ) -> Window:
        by = (_name(price, "price"), _name(qty, "qty"))
        params = {"measure": M_PRODUCT, "threshold": _units(units, "units"), "by": by}
        return cls(K_BARS, params, key, time, grace_ms, emit)

    # -- aggregates ------------------------------------------------------------

    def agg(self, *aggregates: Aggregate, **named: Aggregate) -> Window:
        """A copy with these aggregates added (positional ones get default column names)."""
        copy = Window.__new__(Window)
        for slot in Window.__slots__:
            setattr(copy, slot, getattr(self, slot))
        copy._aggregates = self._aggregates + tuple((None, a) for a in aggregates) + tuple(named.items())
        copy._plan = None
        _ = copy.plan  # checks the names now, not at the first entry
        return copy

    @property
    def columns(self) -> Tuple[str, ...]:
        """The row's columns: key, start, end, then the aggregates'."""
        return RESERVED + self.plan["columns"]

    @property
    def plan(self) -> Dict[str, Any]:
        """Everything a core needs, as plain data (shared by the compiled and the Python core)."""
        if self._plan is None:
            if not self._aggregates:
                raise ValueError("a window needs at least one aggregate: .agg(n=Count(), ...)")
            plan = plan_aggregates(list(self._aggregates))
            if self._kind in (K_SESSION, K_SLIDE_TIME, K_SLIDE_COUNT):
                for custom in plan["customs"]:
                    if not custom.merges:
                        raise ValueError(
                            f"{KIND_NAMES[self._kind]} windows merge partial states: give Reduce(..., merge=(older, newer))"
                        )
            seen = set(RESERVED)
            for column in plan["columns"]:
                if column in seen:
                    raise ValueError(f"column {column!r} twice (or a reserved name: key, start, end); rename one")
                seen.add(column)
            fields = list(plan["fields"])
            by = self._params.get("by", ())
            for name in by:
                if name not in fields:
                    fields.append(name)
            plan["fields"] = tuple(fields)
            measure_fields = tuple(fields.index(name) for name in by) + (-1, -1)
            plan.update(
                kind=self._kind,
                size=self._params.get("size", 0),
                step=self._params.get("step", 0),
                gap=self._params.get("gap", 0),
                count=self._params.get("count", 0),
                measure=self._params.get("measure", M_COUNT),
                threshold=self._params.get("threshold", 0.0),
                measure_fields=measure_fields[:2],
                grace=self._grace,
                final=self._emit == "final",
                key=self._key,
                time=self._time,
            )
            self._plan = plan
        return self._plan

    def describe(self) -> Dict[str, Any]:
        """The window's parameters as JSON-able data (snapshots carry it, to refuse a foreign one)."""
        params = {k: list(v) if isinstance(v, tuple) else v for k, v in self._params.items()}
        return {
            "kind": KIND_NAMES[self._kind],
            **params,
            "key": self._key,
            "time": self._time,
            "grace_ms": self._grace,
            "emit": self._emit,
            "columns": list(self.plan["columns"]),
            "fields": list(self.plan["fields"]),
        }

    def start(self, *, pure_python: Optional[bool] = None):
        """A new, empty aggregator for this window (the compiled core when built, unless declined)."""
        from streammachine.windows.state import window_state_class

        return window_state_class(pure_python, bool(self.plan["customs"]))(self)

    def stage_handler(self, callback: Any, *, stream: str, agent: str, table: Any) -> Any:
        """What ``@app.agent(stream, window=self)`` runs: a ``WindowStage`` whose state is in ``table(name)``."""
        from streammachine.windows.stage import WindowStage, table_name

        return WindowStage(self, callback, table(table_name(stream, agent, self)), stream)

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self._params.items())
        aggs = ", ".join(f"{name}={a!r}" if name else repr(a) for name, a in self._aggregates)
        return f"Window.{KIND_NAMES[self._kind]}({params}, key={self._key!r}, time={self._time!r}).agg({aggs})"
