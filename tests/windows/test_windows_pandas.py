"""Every window kind x every aggregate against pandas (resample, rolling, groupby) on random data.

The data is unordered within the grace period (each entry at most
``grace_ms`` behind its key's latest), so nothing is late and the final
rows must equal what pandas computes on the time-sorted data (a stable
sort: arrival order on equal times). Both cores are checked.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streammachine.windows import (
    OHLC,
    VWAP,
    Count,
    First,
    Last,
    Max,
    Mean,
    Min,
    PythonWindowState,
    Reduce,
    Std,
    Sum,
    Var,
    Window,
)
from tests.windows.window_data import BASE, CORES, Clocks

AGGREGATES = dict(
    n=Count(),
    total=Sum("price"),
    mean=Mean("price"),
    low=Min("price"),
    high=Max("price"),
    first=First("price"),
    last=Last("price"),
    var=Var("price"),
    std=Std("price"),
    vwap=VWAP("price", "qty"),
    med=Reduce("price", lambda values: float(np.median(values))),
)

entry = st.tuples(
    st.sampled_from(["A", "B", "C"]),
    st.integers(0, 40_000),  # step of the key's clock
    st.integers(0, 1_000),  # how far behind the clock (<= grace)
    st.integers(-5_000, 5_000).map(lambda cents: cents / 100),
    st.integers(0, 500).map(lambda lots: lots / 10),
)
GRACE = 1_000


def make_entries(raw):
    clocks = Clocks(per_key=True, start=BASE)
    return [(key, clocks.time(key, step, behind), price, qty) for key, step, behind, price, qty in raw]


def aggs(core):
    """The compiled core takes built-in aggregates only (custom reducers run on the Python core)."""
    if core is PythonWindowState:
        return AGGREGATES
    return {name: aggregate for name, aggregate in AGGREGATES.items() if not isinstance(aggregate, Reduce)}


def run(core, window, rows, *, via="add"):
    state = core(window)
    out = []
    if via == "add":
        for key, ts, price, qty in rows:
            out += state.add({"symbol": key, "price": price, "qty": qty}, id=f"{ts}-0")
    elif via == "entries":
        batch = [
            (f"{ts}-0", {b"symbol": key.encode(), b"price": repr(price).encode(), b"qty": str(qty)})
            for key, ts, price, qty in rows
        ]
        result = state.add_entries(batch)
        assert not result.late and not result.rejected
        out += result
    else:
        keys = np.array([r[0] for r in rows], dtype=object)
        columns = state.add_arrays(
            np.array([r[1] for r in rows], dtype=np.int64),
            keys,
            {"price": np.array([r[2] for r in rows]), "qty": np.array([r[3] for r in rows])},
        )
        assert not len(columns.late) and not columns.rejected
        out += columns.to_frame().to_dict("records")
    out += state.flush()
    assert state.late == 0
    return out


def frame(rows):
    df = pd.DataFrame(rows, columns=["key", "ts", "price", "qty"])
    df["pq"] = df.price * df.qty
    return df.sort_values(["key", "ts"], kind="stable").reset_index(drop=True)


def reference_groups(df, group_columns):
    """Per group: every aggregate, computed by pandas."""
    grouped = df.groupby(group_columns, sort=True)
    out = grouped.agg(
        n=("price", "count"),
        total=("price", "sum"),
        mean=("price", "mean"),
        low=("price", "min"),
        high=("price", "max"),
        first=("price", "first"),
        last=("price", "last"),
        var=("price", "var"),
        std=("price", "std"),
        med=("price", "median"),
        pq=("pq", "sum"),
        q=("qty", "sum"),
        start=("ts", "min"),
        end=("ts", "max"),
    )
    out["vwap"] = out.pq / out.q
    return out.reset_index()


def close(a, b):
    if isinstance(a, float) or isinstance(b, float):
        if (a != a) or (b != b):
            return (a != a) and (b != b)
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-6)
    return a == b


def assert_rows_equal(got, want, columns):
    assert len(got) == len(want), (len(got), len(want))
    for g, w in zip(got, want):
        assert set(g) <= set(columns) | {"med"}, g
        for column in g:
            assert close(g[column], w[column]), (column, g, w)


COLUMNS = ["key", "start", "end"] + list(AGGREGATES)
SETTINGS = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("core", CORES)
@pytest.mark.parametrize("via", ["add", "entries", "arrays"])
@SETTINGS
@given(raw=st.lists(entry, max_size=60), size=st.sampled_from([1_000, 60_000, 7_000]))
def test_tumbling_matches_resample(core, via, raw, size):
    rows = make_entries(raw)
    window = Window.tumbling(size, key="symbol", grace_ms=GRACE).agg(**aggs(core))
    got = sorted(run(core, window, rows, via=via), key=lambda r: (r["key"], r["start"]))
    df = frame(rows)
    want = []
    if len(df):
        indexed = df.set_index(pd.to_datetime(df.ts, unit="ms"))
        resampled = indexed.groupby("key").resample(f"{size}ms", origin="epoch")
        counts = resampled.price.count()
        bins = counts[counts > 0].index
        for key, bin_start in bins:
            start = bin_start.value // 1_000_000
            part = df[(df.key == key) & (df.ts >= start) & (df.ts < start + size)]
            ref = reference_groups(part, ["key"]).iloc[0].to_dict()
            ref.update(start=start, end=start + size)
            want.append(ref)
    assert_rows_equal(got, sorted(want, key=lambda r: (r["key"], r["start"])), COLUMNS)


@pytest.mark.parametrize("core", CORES)
@SETTINGS
@given(raw=st.lists(entry, max_size=60), shape=st.sampled_from([(60_000, 20_000), (9_000, 3_000), (4_000, 4_000)]))
def test_hopping_matches_resample_with_offsets(core, raw, shape):
    size, step = shape
    rows = make_entries(raw)
    window = Window.hopping(size, step, key="symbol", grace_ms=GRACE).agg(**aggs(core))
    got = sorted(run(core, window, rows), key=lambda r: (r["key"], r["start"]))
    df = frame(rows)
    want = []
    if len(df):
        indexed = df.set_index(pd.to_datetime(df.ts, unit="ms"))
        for k in range(size // step):  # a hopping window is a tumbling one shifted by k steps
            counts = indexed.groupby("key").resample(f"{size}ms", origin="epoch", offset=f"{k * step}ms").price.count()
            for key, bin_start in counts[counts > 0].index:
                start = bin_start.value // 1_000_000
                part = df[(df.key == key) & (df.ts >= start) & (df.ts < start + size)]
                ref = reference_groups(part, ["key"]).iloc[0].to_dict()
                ref.update(start=start, end=start + size)
                want.append(ref)
    assert_rows_equal(got, sorted(want, key=lambda r: (r["key"], r["start"])), COLUMNS)


@pytest.mark.parametrize("core", CORES)
@SETTINGS
@given(raw=st.lists(entry, max_size=60), gap=st.sampled_from([0, 5_000, 30_000]))
def test_session_matches_groupby_on_gaps(core, raw, gap):
    rows = make_entries(raw)
    window = Window.session(gap, key="symbol", grace_ms=GRACE).agg(**aggs(core))
    got = sorted(run(core, window, rows), key=lambda r: (r["key"], r["start"]))
    df = frame(rows)
    want = []
    if len(df):
        df["session"] = df.groupby("key").ts.transform(lambda ts: (ts.diff() > gap).cumsum())
        want = reference_groups(df, ["key", "session"]).to_dict("records")
    assert_rows_equal(got, sorted(want, key=lambda r: (r["key"], r["start"])), COLUMNS)


def rolling_reference(df, by):
    """Per entry (time order within each key): every aggregate over its window, by pandas rolling."""
    out = []
    for key, part in df.groupby("key", sort=True):
        part = part.set_index(pd.to_datetime(part.ts, unit="ms")) if isinstance(by, str) else part
        roll = part.price.rolling(by, min_periods=1)
        ref = pd.DataFrame(
            {
                "n": roll.count(),
                "total": roll.sum(),
                "mean": roll.mean(),
                "low": roll.min(),
                "high": roll.max(),
                "first": roll.apply(lambda a: a[0], raw=True),
                "last": roll.apply(lambda a: a[-1], raw=True),
                "var": roll.var(),
                "std": roll.std(),
                "med": roll.median(),
                "vwap": part.pq.rolling(by, min_periods=1).sum() / part.qty.rolling(by, min_periods=1).sum(),
                "end": part.ts.to_numpy(),
                "oldest": part.ts.rolling(by, min_periods=1).min().to_numpy(),
            }
        )
        ref["key"] = key
        out += ref.to_dict("records")
    return out


@pytest.mark.parametrize("core", CORES)
@SETTINGS
@given(raw=st.lists(entry, max_size=60), size=st.sampled_from([1_000, 30_000, 120_000]))
def test_sliding_time_matches_rolling(core, raw, size):
    rows = make_entries(raw)
    window = Window.sliding(size, key="symbol", grace_ms=GRACE).agg(**aggs(core))
    got = sorted(run(core, window, rows), key=lambda r: r["key"])  # stable: per key in time order
    want = rolling_reference(frame(rows), f"{size}ms")
    for row in want:
        row["start"] = row["end"] - size
    assert_rows_equal(got, want, COLUMNS)


@pytest.mark.parametrize("core", CORES)
@SETTINGS
@given(raw=st.lists(entry, max_size=60), count=st.sampled_from([1, 3, 10]))
def test_sliding_entries_matches_rolling(core, raw, count):
    rows = make_entries(raw)
    window = Window.sliding(entries=count, key="symbol", grace_ms=GRACE).agg(**aggs(core))
    got = sorted(run(core, window, rows), key=lambda r: r["key"])
    want = rolling_reference(frame(rows), count)
    for row in want:
        row["start"] = row["oldest"]
    assert_rows_equal(got, want, COLUMNS)


@pytest.mark.parametrize("core", CORES)
@SETTINGS
@given(
    raw=st.lists(entry, max_size=60),
    bars=st.sampled_from([("count", 3), ("volume", 40.0), ("dollar", 2_000.0)]),
)
def test_bars_match_groupby_on_cumulative_measure(core, raw, bars):
    kind, threshold = bars
    rows = make_entries(raw)
    if kind == "count":
        window = Window.count_bars(threshold, key="symbol", grace_ms=GRACE)
    elif kind == "volume":
        window = Window.volume_bars(threshold, "qty", key="symbol", grace_ms=GRACE)
    else:
        window = Window.dollar_bars(threshold, "price", "qty", key="symbol", grace_ms=GRACE)
    got = sorted(run(core, window.agg(**aggs(core)), rows), key=lambda r: (r["key"], r["start"]))
    df = frame(rows)
    want = []
    if len(df):
        measure = {"count": np.ones(len(df)), "volume": df.qty.to_numpy(), "dollar": df.pq.to_numpy()}[kind]
        bar_ids, current, bar, previous_key = [], 0.0, 0, None
        for key, m in zip(df.key, measure):
            if key != previous_key:
                current, bar, previous_key = 0.0, 0, key
            bar_ids.append(bar)
            current += m
            if current >= threshold:
                current, bar = 0.0, bar + 1
        df["bar"] = bar_ids
        want = reference_groups(df, ["key", "bar"]).to_dict("records")
    assert_rows_equal(got, sorted(want, key=lambda r: (r["key"], r["start"])), COLUMNS)


@pytest.mark.parametrize("core", CORES)
@SETTINGS
@given(raw=st.lists(entry, max_size=60), ohlc_size=st.sampled_from([1_000, 60_000]))
def test_ohlc_aggregate_matches_fastohlc(core, raw, ohlc_size):
    from streammachine.ohlc import PythonFastOHLC
    from streammachine.windows import candle_from_row

    rows = make_entries(raw)
    window = Window.tumbling(ohlc_size, key="symbol", grace_ms=GRACE).agg(OHLC("price", "qty"))
    got = run(core, window, rows)
    reference = PythonFastOHLC([ohlc_size])
    for key, ts, price, qty in rows:
        reference.update_tick(key, price, qty, ts)
    want = {(key, c.candle_start_ms): c for key in reference.symbols for c in reference.get_candles(key, ohlc_size)}
    assert {(row["key"], row["start"]): candle_from_row(row) for row in got} == want
