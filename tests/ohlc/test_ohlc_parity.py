"""The compiled and the pure-Python OHLC cores agree exactly, and both agree with pandas.

Exactly means bit for bit, volume sums included: the Python core adds
volumes in arrival order (np.add.at) as the compiled loop does.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streammachine.ohlc import CythonFastOHLC, PythonFastOHLC

pytestmark = pytest.mark.skipif(CythonFastOHLC is None, reason="the compiled OHLC core is not built")

BASE = 1_700_000_000_000
SYMBOLS = ["AAPL", b"AAPL", "MSFT", b"GOOG", "\u00e9t\u00e9"]
INTERVAL_SETS = [(60_000, 300_000), (1_000,), (7, 60_000), (250, 1_000, 3_600_000)]

prices = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)
volumes = st.floats(min_value=0, max_value=1e6, allow_nan=False, allow_infinity=False)
stamps = st.integers(min_value=0, max_value=900_000).map(lambda offset: BASE + offset)
bad_numbers = st.sampled_from([math.nan, math.inf, -math.inf, "1.5", b"2", None, True, [1.0]])

tick = st.tuples(st.just("tick"), st.sampled_from(SYMBOLS), prices, volumes, stamps)
bad_tick = st.one_of(
    st.tuples(st.just("tick"), st.sampled_from(SYMBOLS), bad_numbers, volumes, stamps),
    st.tuples(st.just("tick"), st.sampled_from(SYMBOLS), prices, st.one_of(bad_numbers, st.just(-1.0)), stamps),
    st.tuples(
        st.just("tick"), st.sampled_from(SYMBOLS), prices, volumes, st.sampled_from([-1, 1.5e300, "1", None, 2**63])
    ),
    st.tuples(st.just("tick"), st.sampled_from([None, 5, b"\xff", "", ("A",)]), prices, volumes, stamps),
)
flush = st.tuples(st.just("flush"), st.sampled_from(SYMBOLS), st.integers(0, 2), st.one_of(st.none(), stamps))
entry_value = st.one_of(prices.map(repr), st.sampled_from(["nan", "x", "", " 1_0 ", "1e400", "-0.0"]))
entry = st.tuples(
    st.one_of(stamps.map(lambda ms: f"{ms}-0"), st.sampled_from(["bad", "12-", "-1", "1-2-3", "\u0661-0"])),
    st.fixed_dictionaries(
        {},
        optional={
            "symbol": st.sampled_from(["AAPL", "MSFT", "X"]),
            "price": entry_value,
            "volume": st.one_of(volumes.map(repr), st.just("-1")),
        },
    ),
)
batch = st.tuples(st.just("batch"), st.lists(entry, max_size=12), st.booleans())
arrays = st.tuples(
    st.just("arrays"),
    st.lists(st.tuples(st.sampled_from(SYMBOLS + [None]), prices, volumes, stamps), max_size=12),
    st.booleans(),
)
operations = st.lists(st.one_of(tick, tick, tick, bad_tick, flush, batch, arrays), max_size=60)


def as_bytes_entries(entries):
    return [(i.encode(), {k.encode(): v.encode() for k, v in f.items()}) for i, f in entries]


def run(aggregator, operation):
    """Apply one operation; returns what it returned or the error it raised (to compare)."""
    kind = operation[0]
    try:
        if kind == "tick":
            return aggregator.update_tick(*operation[1:])
        if kind == "flush":
            symbol, index, as_of = operation[1:]
            interval = aggregator.intervals[index % len(aggregator.intervals)]
            return aggregator.flush_interval(symbol, interval, as_of_ms=as_of)
        if kind == "batch":
            entries, as_bytes = operation[1:]
            reply = [[b"ticks", as_bytes_entries(entries)]] if as_bytes else {"ticks": [entries]}
            return aggregator.process_stream_batch(reply)
        rows, single_symbol = operation[1:]
        if not rows:
            return aggregator.update_arrays([], [], [], [])
        symbols, p, v, t = zip(*rows)
        return aggregator.update_arrays(
            symbols[0] if single_symbol else np.array(symbols, dtype=object), np.array(p), np.array(v), np.array(t)
        )
    except ValueError as exc:
        return ("ValueError", str(exc))


def state(aggregator):
    candles = {
        (symbol, interval): aggregator.get_candles(symbol, interval)
        for symbol in aggregator.symbols
        for interval in aggregator.intervals
    }
    latest = {symbol: aggregator.latest_timestamp(symbol) for symbol in aggregator.symbols}
    return candles, latest, aggregator.symbols, aggregator.tick_count, aggregator.late_ticks, aggregator.rejected


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(intervals=st.sampled_from(INTERVAL_SETS), ops=operations)
def test_compiled_and_python_cores_agree(intervals, ops):
    compiled, python = CythonFastOHLC(intervals), PythonFastOHLC(intervals)
    for operation in ops:
        assert run(compiled, operation) == run(python, operation), operation
    assert state(compiled) == state(python)
    # volumes must match to the bit, not approximately
    for (symbol, interval), candles in state(compiled)[0].items():
        for a, b in zip(candles, python.get_candles(symbol, interval)):
            assert a.volume.hex() == b.volume.hex()


@settings(max_examples=100, deadline=None)
@given(ops=st.lists(st.one_of(tick, flush), max_size=80))
def test_single_ticks_and_arrays_agree(ops):
    """update_arrays is update_tick in a loop: same candles, same counters."""
    for cls in (CythonFastOHLC, PythonFastOHLC):
        by_tick, by_array = cls(), cls()
        pending = []

        def drain():
            if pending:
                run(by_array, ("arrays", list(pending), False))
                pending.clear()

        for operation in ops:
            if operation[0] == "tick":
                run(by_tick, operation)
                pending.append(operation[1:])
            else:
                drain()
                assert run(by_tick, operation) == run(by_array, operation)
        drain()
        assert state(by_tick) == state(by_array)


def pandas_candles(ticks, interval):
    """The reference: pandas resample().ohlc() and volume sum, per symbol, epoch-aligned."""
    frame = pd.DataFrame(ticks, columns=["symbol", "price", "volume", "ts"])
    frame["arrival"] = range(len(frame))
    frame = frame.sort_values(["ts", "arrival"], kind="stable")  # open/close by time, ties by arrival
    frame.index = pd.to_datetime(frame["ts"], unit="ms")
    out = {}
    for symbol, group in frame.groupby("symbol", sort=False):
        resampled = group.resample(f"{interval}ms", origin="epoch")
        ohlc = resampled["price"].ohlc()
        ohlc["volume"] = resampled["volume"].sum()
        ohlc["trades"] = resampled["price"].count()
        ohlc["last_ts"] = resampled["ts"].max()
        ohlc = ohlc[ohlc["trades"] > 0]
        out[symbol] = [
            (
                int(start.value // 1_000_000),
                row.open,
                row.high,
                row.low,
                row.close,
                row.volume,
                int(row.last_ts),
                int(row.trades),
            )
            for start, row in ohlc.iterrows()
        ]
    return out


@settings(max_examples=60, deadline=None)
@given(
    intervals=st.sampled_from(INTERVAL_SETS),
    ticks=st.lists(
        st.tuples(st.sampled_from(["AAPL", "MSFT", "GOOG"]), prices, volumes, stamps), min_size=1, max_size=200
    ),
)
def test_candles_match_pandas_resample(intervals, ticks):
    for cls in (CythonFastOHLC, PythonFastOHLC):
        aggregator = cls(intervals)
        for symbol, price, volume, ts in ticks:
            aggregator.update_tick(symbol, price, volume, ts)
        for interval in intervals:
            expected = pandas_candles(ticks, interval)
            for symbol, rows in expected.items():
                got = [
                    (c.candle_start_ms, c.open, c.high, c.low, c.close, c.volume, c.timestamp_ms, c.trade_count)
                    for c in aggregator.get_candles(symbol, interval)
                ]
                assert [g[:5] + g[6:] for g in got] == [e[:5] + e[6:] for e in rows]
                # pandas sums pairwise, we add in arrival order: equal up to rounding
                assert [g[5] for g in got] == pytest.approx([e[5] for e in rows], rel=1e-9, abs=1e-6)


def test_long_runs_agree():
    """Past the Python core's pending-chunk size, with disorder and flushes along the way."""
    rng = np.random.default_rng(7)
    count = 120_000
    symbols = np.array(["AAPL", "MSFT", b"AAPL", "GOOG"], dtype=object)[rng.integers(0, 4, count)]
    stamps = (
        BASE + np.sort(rng.integers(0, 3_600_000, count)) - rng.integers(0, 90_000, count) * (rng.random(count) < 0.05)
    )
    prices = np.round(100 + rng.standard_normal(count).cumsum(), 2)
    volumes = rng.random(count) * 100
    compiled, python = CythonFastOHLC(), PythonFastOHLC()
    for start in range(0, count, 10_000):
        flushed = []
        for aggregator in (compiled, python):
            for i in range(start, start + 10_000):
                aggregator.update_tick(symbols[i], float(prices[i]), float(volumes[i]), int(stamps[i]))
            flushed.append([aggregator.flush_interval(s, 60_000) for s in ("AAPL", "MSFT")])
        assert flushed[0] == flushed[1] and flushed[0][0]
    assert state(compiled) == state(python)
    assert compiled.late_ticks > 0 and compiled.tick_count == count


# -- snapshots ----------------------------------------------------------------


def snapshot_bytes(aggregator) -> bytes:
    """The snapshot as it is stored: orjson bytes (finite floats round-trip exactly)."""
    import orjson

    return orjson.dumps(aggregator.snapshot())


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(intervals=st.sampled_from(INTERVAL_SETS), before=operations, after=operations)
def test_snapshots_are_identical_and_restore_across_implementations(intervals, before, after):
    """Same ops -> the same snapshot from both cores; a snapshot of one, restored into the other, carries on alike."""
    compiled, python = CythonFastOHLC(intervals), PythonFastOHLC(intervals)
    for operation in before:
        run(compiled, operation), run(python, operation)
    assert compiled.snapshot() == python.snapshot()
    python_from_compiled = PythonFastOHLC.from_snapshot(snapshot_bytes(compiled))
    compiled_from_python = CythonFastOHLC.from_snapshot(snapshot_bytes(python))
    restored_in_place = CythonFastOHLC(intervals)
    restored_in_place.update_tick("ZZZ", 1.0, 1.0, BASE)  # restore replaces, not merges
    restored_in_place.restore(python.snapshot())
    everyone = (compiled, python, python_from_compiled, compiled_from_python, restored_in_place)
    assert all(a.snapshot() == compiled.snapshot() for a in everyone)
    for operation in after:
        results = [run(a, operation) for a in everyone]
        assert all(r == results[0] for r in results), operation
    states = [state(a) for a in everyone]
    assert all(s == states[0] for s in states)
    snapshots = [snapshot_bytes(a) for a in everyone]  # bytes: volumes equal to the bit
    assert all(s == snapshots[0] for s in snapshots)


@pytest.mark.parametrize("cls", [CythonFastOHLC, PythonFastOHLC], ids=["compiled", "python"])
def test_a_bad_snapshot_is_refused_and_leaves_the_state_alone(cls):
    source = cls([1000])
    for i in range(5):
        source.update_tick("AAPL", 1.0 + i, 1.0, BASE + 600 * i)
    good = source.snapshot()
    target = cls([1000])
    target.update_tick("MSFT", 2.0, 3.0, BASE)
    kept = target.snapshot()

    def broken(change):
        snapshot = json.loads(json.dumps(good))  # as stored: candles are lists
        change(snapshot)
        return snapshot

    candles = lambda s: s["symbols"][0]["series"][0]["candles"]  # noqa: E731
    bad = {
        "intervals": broken(lambda s: s.update(intervals=[60_000])),
        "format": broken(lambda s: s.update(format=99)),
        "unsorted": broken(lambda s: candles(s).reverse()),
        "misaligned": broken(lambda s: candles(s)[0].__setitem__(0, BASE + 1)),
        "tick outside": broken(lambda s: candles(s)[0].__setitem__(8, BASE + 5000)),
        "price": broken(lambda s: candles(s)[0].__setitem__(1, "1.0")),
        "counter": broken(lambda s: s.update(tick_count=-1)),
        "twice": broken(lambda s: s["symbols"].append(s["symbols"][0])),
        "json": b"{not json",
    }
    for what, snapshot in bad.items():
        with pytest.raises(ValueError, match="OHLC snapshot"):
            target.restore(snapshot)
        assert target.snapshot() == kept, what
    target.restore(good)
    assert target.snapshot() == good


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # the overflow is the point
@pytest.mark.parametrize("cls", [CythonFastOHLC, PythonFastOHLC], ids=["compiled", "python"])
def test_an_overflowed_volume_survives_a_snapshot(cls):
    aggregator = cls([1000])
    aggregator.update_tick("AAPL", 1.0, 1e308, BASE)
    aggregator.update_tick("AAPL", 1.0, 1e308, BASE + 1)
    restored = cls.from_snapshot(snapshot_bytes(aggregator))  # orjson would write infinity as null
    assert restored.get_candles("AAPL", 1000)[0].volume == math.inf
