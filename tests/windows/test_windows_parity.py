"""The compiled and the pure-Python window cores agree exactly: rows, counters and snapshots.

Exactly means bit for bit (rows compared by repr, NaN included), through
random sequences of entries (in order, within grace, late beyond it, bad),
read replies, arrays, wall-clock advances, and each core restoring the
other's snapshot mid-stream.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streammachine.windows import (
    OHLC,
    VWAP,
    Count,
    CythonWindowState,
    First,
    Last,
    Max,
    Mean,
    Min,
    PythonWindowState,
    Std,
    Sum,
    Var,
    Window,
)
from tests.windows.window_data import BASE, Clocks

pytestmark = pytest.mark.skipif(CythonWindowState is None, reason="the compiled window core is not built")

KEYS = ["A", "B", "\u00e9t\u00e9"]
AGGS = dict(
    n=Count(),
    s=Sum("price"),
    m=Mean("price"),
    lo=Min("price"),
    hi=Max("price"),
    f=First("price"),
    la=Last("price"),
    v=Var("price"),
    sd=Std("price", ddof=0),
    vwap=VWAP("price", "qty"),
    c=OHLC("price", "qty"),
)
WINDOWS = [
    lambda g, e: Window.tumbling(1_000, key="k", grace_ms=g, emit=e),
    lambda g, e: Window.hopping(3_000, 1_000, key="k", grace_ms=g, emit=e),
    lambda g, e: Window.session(700, key="k", grace_ms=g, emit=e),
    lambda g, e: Window.sliding(2_000, key="k", grace_ms=g, emit=e),
    lambda g, e: Window.sliding(entries=4, key="k", grace_ms=g, emit=e),
    lambda g, e: Window.count_bars(3, key="k", grace_ms=g, emit=e),
    lambda g, e: Window.volume_bars(25.0, "qty", key="k", grace_ms=g, emit=e),
    lambda g, e: Window.dollar_bars(900.0, "price", "qty", key="k", grace_ms=g, emit=e),
]

prices = st.one_of(
    st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False),
    st.integers(-300, 300).map(float),
)
qtys = st.floats(min_value=0, max_value=50, allow_nan=False, allow_infinity=False)
# time moves on by `step` and an entry lags `behind` it: equal times (ties) are common, some entries are late
steps = st.sampled_from([0, 0, 50, 100, 400, 2_000])
behinds = st.sampled_from([0, 0, 0, 50, 700, 4_000])
offsets = st.tuples(steps, behinds)
good = st.tuples(st.just("add"), st.sampled_from(KEYS), offsets, prices, qtys)
bad = st.tuples(
    st.just("bad"),
    st.sampled_from(KEYS),
    offsets,
    st.sampled_from([math.nan, math.inf, "x", None, b"1e999", True]),
    qtys,
)
entries = st.tuples(st.just("entries"), st.lists(st.one_of(good, bad), max_size=8))
arrays = st.tuples(st.just("arrays"), st.lists(st.one_of(good, bad), max_size=8))
advance = st.tuples(st.just("advance"), st.sampled_from([0, 300, 5_000]))
swap = st.tuples(st.just("swap"))
operations = st.lists(st.one_of(good, good, good, bad, entries, arrays, advance, swap), max_size=50)


def with_times(ops):
    """The operations with each entry's (step, behind) turned into an offset from BASE."""
    clocks = Clocks(per_key=False, floor=0)

    def timed(op):
        step_ms, behind = op[2]
        return (op[0], op[1], clocks.time(None, step_ms, behind), op[3], op[4])

    out = []
    for op in ops:
        if op[0] in ("add", "bad"):
            out.append(timed(op))
        elif op[0] in ("entries", "arrays"):
            out.append((op[0], [timed(o) for o in op[1]]))
        elif op[0] == "advance":
            out.append(("advance", clocks.now + op[1]))
        else:
            out.append(op)
    return out


def fields_of(op):
    _, key, offset, price, qty = op
    return {"k": key, "price": price, "qty": qty}, f"{BASE + offset}-0"


def as_text(rows):
    return repr([sorted(row.items()) for row in rows])


def columns_text(columns):
    names = list(columns)
    lists = [columns[name].tolist() for name in names]
    return repr([sorted(zip(names, values)) for values in zip(*lists)]) if lists and lists[0] else "[]"


def step(state, op):
    """Apply one operation; what came out, as comparable text."""
    kind = op[0]
    if kind in ("add", "bad"):
        fields, entry_id = fields_of(op)
        try:
            return as_text(state.add(fields, entry_id))
        except ValueError as exc:
            return f"error: {exc}"
    if kind == "entries":
        batch = [
            (
                fields_of(o)[1],
                {k.encode(): repr(v).encode() if isinstance(v, float) else v for k, v in fields_of(o)[0].items()},
            )
            for o in op[1]
        ]
        for entry_id, fields in batch:
            fields[b"k"] = fields[b"k"].encode() if isinstance(fields[b"k"], str) else fields[b"k"]
        # an even-sized batch takes the window stage's path (pairs of one stream: one loop in the core)
        rows = state.add_entries(batch, stream="trades") if len(batch) % 2 == 0 else state.add_entries(batch)
        return as_text(rows) + repr(rows.late) + repr(rows.rejected)
    if kind == "arrays":
        ops = op[1]
        price = np.array([o[3] if isinstance(o[3], float) and not isinstance(o[3], bool) else math.nan for o in ops])
        columns = state.add_arrays(
            np.array([BASE + o[2] for o in ops], dtype=np.int64),
            np.array([o[1] for o in ops], dtype=object),
            {"price": price, "qty": np.array([o[4] for o in ops])},
        )
        return columns_text(columns) + repr(columns.late.tolist()) + repr(columns.rejected)
    if kind == "advance":
        return as_text(state.advance_to(BASE + op[1]))
    raise AssertionError(op)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    which=st.integers(0, len(WINDOWS) - 1),
    grace=st.sampled_from([0, 500, 3_000]),
    emit=st.sampled_from(["final", "current"]),
    ops=operations,
)
def test_compiled_and_python_cores_agree(which, grace, emit, ops):
    window = WINDOWS[which](grace, emit).agg(**AGGS)
    compiled, python = CythonWindowState(window), PythonWindowState(window)
    for op in with_times(ops):
        if op[0] == "swap":  # each restores the other's snapshot (through JSON) and goes on
            from_compiled, from_python = json.dumps(compiled.snapshot()), json.dumps(python.snapshot())
            assert from_compiled == from_python
            compiled, python = CythonWindowState(window), PythonWindowState(window)
            compiled.restore(from_python)
            python.restore(from_compiled)
            continue
        assert step(compiled, op) == step(python, op), op
    assert as_text(compiled.flush()) == as_text(python.flush())
    assert (compiled.entries, compiled.late, compiled.rejected) == (python.entries, python.late, python.rejected)
    assert json.dumps(compiled.snapshot()) == json.dumps(python.snapshot())


@pytest.mark.parametrize("which", range(len(WINDOWS)))
def test_a_restored_state_goes_on_exactly_as_the_original(which):
    """Snapshot mid-stream, restore into a fresh state of the other core: the rest of the rows are identical."""
    rng = np.random.default_rng(which)
    window = WINDOWS[which](1_000, "final").agg(**AGGS)
    ticks = [
        ({"k": KEYS[rng.integers(0, 3)], "price": float(rng.normal(100, 5)), "qty": float(rng.random() * 9)}, BASE + t)
        for t in np.sort(rng.integers(0, 600_000, 3_000)).tolist()
    ]
    for first, second in ((CythonWindowState, PythonWindowState), (PythonWindowState, CythonWindowState)):
        original = first(window)
        rows = [original.add(fields, f"{ts}-0") for fields, ts in ticks[:1_500]]
        restored = second(window)
        restored.restore(json.loads(json.dumps(original.snapshot())))
        rest_original = [original.add(fields, f"{ts}-0") for fields, ts in ticks[1_500:]] + [original.flush()]
        rest_restored = [restored.add(fields, f"{ts}-0") for fields, ts in ticks[1_500:]] + [restored.flush()]
        assert as_text(sum(rest_original, [])) == as_text(sum(rest_restored, []))
        assert sum(len(r) for r in rows + rest_original) > 0


decimal_text = st.one_of(
    st.from_regex(r"[+-]?[0-9]{0,17}(\.[0-9]{0,17})?", fullmatch=True),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.sampled_from([".", "-", "+.5", "1.", "-0", "-0.0", "1_000.5", " 2.5 ", "1e5", "nan", "inf", "0x10", "\u0661"]),
)


@settings(max_examples=300, deadline=None)
@given(text=decimal_text, as_bytes=st.booleans())
def test_numbers_read_from_text_are_exactly_what_float_reads(text, as_bytes):
    """The compiled core reads plain decimals itself (a fast path): the double must be float()'s, bit for bit."""
    window = Window.tumbling(1_000).agg(total=Sum("p"))
    raw = text.encode() if as_bytes else text
    outcomes = []
    for cls in (CythonWindowState, PythonWindowState):
        state = cls(window)
        try:
            state.add({"p": raw}, "1-0")
        except ValueError as exc:
            outcomes.append(str(exc))
        else:
            outcomes.append(repr(state.flush()[0]["total"]))
    assert outcomes[0] == outcomes[1]
    try:
        expected = float(raw) + 0.0
    except ValueError:
        return
    if math.isfinite(expected):
        assert outcomes[0] == repr(expected)


def test_usual_entries_take_the_compiled_fast_path():
    """Stream entries (bytes) and Python dicts (str keys, float values) are read in C, not by the checked path."""
    state = CythonWindowState(Window.tumbling(1_000, key="k").agg(v=VWAP("price", "qty"), m=Mean("price")))
    state.add({b"k": b"A", b"price": b"101.25", b"qty": b"3"}, b"1-0")  # creates the key: the checked path
    state._slow_reads = 0
    for ts in range(2, 50):
        state.add({b"k": b"A", b"price": b"101.25", b"qty": b"3"}, f"{ts}-0".encode())
        state.add({"k": "A", "price": 101.25, "qty": 3.0}, f"{ts}-1")
        state.add({"k": "A", "price": "-0.5", "qty": 2}, f"{ts}-2")
    assert state._slow_reads == 0
