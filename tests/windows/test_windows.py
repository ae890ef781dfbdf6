"""Window semantics: late entries, grace, empty windows, keys coming and going, emission modes,
bad input (clear errors, the rest of a batch still counted), bad window arguments, snapshots."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from streammachine.message import Message
from streammachine.windows import (
    OHLC,
    VWAP,
    Count,
    CythonWindowState,
    Mean,
    PythonWindowState,
    Reduce,
    Sum,
    Window,
)

CORES = [PythonWindowState] + ([CythonWindowState] if CythonWindowState is not None else [])
core = pytest.mark.parametrize("core", CORES)


def tick(key, price, qty=1.0):
    return {"symbol": key, "price": price, "qty": qty}


@core
def test_an_entry_behind_a_closed_window_is_late_counted_and_reported_never_added(core):
    state = core(Window.tumbling(60_000, key="symbol").agg(n=Count(), s=Sum("price")))
    assert state.add(tick("A", 1.0), "1000-0") == []
    closed = state.add(tick("A", 2.0), "61000-0")  # the clock passes 60000: [0, 60000) closes
    assert closed == [{"key": "A", "start": 0, "end": 60_000, "n": 1, "s": 1.0}]
    assert state.add(tick("A", 100.0), "59000-0") == []  # its window closed: late
    assert state.late == 1 and state.entries == 3
    batch = state.add_entries([("58000-0", tick("A", 5.0)), ("62000-0", tick("A", 3.0))])
    assert batch.late == ["58000-0"] and batch == []
    assert state.flush() == [{"key": "A", "start": 60_000, "end": 120_000, "n": 2, "s": 5.0}]
    assert state.stats()["late"] == 2


@core
def test_grace_keeps_a_window_open_for_entries_that_lag_by_up_to_grace(core):
    state = core(Window.tumbling(60_000, key="symbol", grace_ms=5_000).agg(n=Count()))
    state.add(tick("A", 1.0), "1000-0")
    assert state.add(tick("A", 1.0), "62000-0") == []  # clock 62000 - grace 5000 < 60000: still open
    assert state.add(tick("A", 1.0), "57000-0") == []  # 5000 behind: within grace, counted
    assert state.add(tick("A", 1.0), "65000-0") == [{"key": "A", "start": 0, "end": 60_000, "n": 2}]
    assert state.late == 0


@core
def test_empty_windows_emit_nothing(core):
    state = core(Window.tumbling(1_000, key="symbol").agg(n=Count()))
    state.add(tick("A", 1.0), "500-0")
    rows = state.add(tick("A", 1.0), "250000-0")
    assert [row["start"] for row in rows] == [0]
    assert [row["start"] for row in state.flush()] == [250_000]


@core
def test_each_key_has_its_own_clock_and_advance_to_closes_quiet_keys(core):
    state = core(Window.tumbling(1_000, key="symbol", grace_ms=100).agg(n=Count()))
    state.add(tick("A", 1.0), "100-0")
    state.add(tick("B", 1.0), "200-0")
    assert state.add(tick("A", 1.0), "5000-0") == [{"key": "A", "start": 0, "end": 1_000, "n": 1}]  # B stays open
    assert state.advance_to(4_000) == [{"key": "B", "start": 0, "end": 1_000, "n": 1}]
    assert state.add(tick("B", 1.0), "900-0") == [] and state.late == 1  # B's window closed by the wall clock
    assert state.add(tick("C", 1.0), "2500-0") == [] and state.late == 2  # a new key starts at the floor too
    assert state.add(tick("C", 1.0), "3950-0") == []  # >= 4000 - grace: taken
    assert state.keys == ["A", "B", "C"]
    for bad in (-1, 2**63, 1.5, True):
        with pytest.raises(ValueError, match="now_ms=.*: expected integer epoch milliseconds"):
            state.advance_to(bad)
    assert {row["key"]: row["n"] for row in state.flush()} == {"A": 1, "C": 1}


@core
def test_session_and_bars_close_on_advance_and_flush(core):
    session = core(Window.session(1_000, key="symbol").agg(n=Count()))
    session.add(tick("A", 1.0), "0-0")
    session.add(tick("A", 1.0), "900-0")
    assert session.advance_to(1_900) == []  # last + gap == 1900 is not < 1900: could still grow
    assert session.advance_to(1_901) == [{"key": "A", "start": 0, "end": 900, "n": 2}]
    bars = core(Window.count_bars(3, key="symbol").agg(n=Count()))
    bars.add(tick("A", 1.0), "0-0")
    assert bars.advance_to(10**9) == []  # bars close by entries, not by time
    assert bars.flush() == [{"key": "A", "start": 0, "end": 0, "n": 1}]  # end of data: the partial bar


@core
def test_current_emits_every_update_and_its_last_row_is_the_final_row(core):
    rng = np.random.default_rng(3)
    stamps = np.sort(rng.integers(0, 300_000, 400)).tolist()
    prices = rng.normal(100, 3, 400).tolist()
    final_state = core(Window.hopping(60_000, 20_000, key="symbol").agg(m=Mean("price"), v=VWAP("price", "qty")))
    current_state = core(
        Window.hopping(60_000, 20_000, key="symbol", emit="current").agg(m=Mean("price"), v=VWAP("price", "qty"))
    )
    final, latest, updates = [], {}, 0
    for ts, price in zip(stamps, prices):
        final += final_state.add(tick("A", price, 2.0), f"{ts}-0")
        rows = current_state.add(tick("A", price, 2.0), f"{ts}-0")
        assert len(rows) == 3  # each entry is in size / step windows
        updates += len(rows)
        latest.update({row["start"]: row for row in rows})
    final += final_state.flush()
    assert current_state.flush() == []
    assert updates == 3 * len(stamps)
    assert sorted(final, key=lambda r: r["start"]) == [latest[start] for start in sorted(latest)]


@core
def test_bad_entries_raise_errors_naming_field_value_and_expectation(core):
    state = core(Window.tumbling(1_000, key="symbol").agg(v=VWAP("price", "qty")))
    cases = [
        ({"symbol": "A", "price": "abc", "qty": 1.0}, "1-0", "field 'price'='abc': expected a finite number"),
        ({"symbol": "A", "price": math.nan, "qty": 1.0}, "1-0", "field 'price'=nan: expected a finite number"),
        ({"symbol": "A", "qty": 1.0}, "1-0", "field 'price' missing"),
        ({"price": 1.0, "qty": 1.0}, "1-0", "key field 'symbol' missing"),
        ({"symbol": 5, "price": 1.0, "qty": 1.0}, "1-0", "key field 'symbol'=5: expected text"),
        (tick("A", 1.0), "nope", "malformed stream id 'nope'"),
        (tick("A", 1.0), None, "id=None"),
    ]
    for fields, entry_id, message in cases:
        with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
            state.add(fields, entry_id)
    assert state.rejected == len(cases) and state.entries == 0


@core
def test_a_batch_goes_on_past_bad_entries_and_lists_them(core):
    state = core(Window.tumbling(1_000, key="symbol").agg(n=Count(), s=Sum("price")))
    rows = state.add_entries(
        [
            (b"100-0", {b"symbol": b"A", b"price": b"1.5", b"qty": b"1"}),
            (b"200-0", {b"symbol": b"A", b"price": b"x", b"qty": b"1"}),
            (b"bad", {b"symbol": b"A", b"price": b"1", b"qty": b"1"}),
            (b"300-0", {b"symbol": b"A", b"price": b"2.5", b"qty": b"1"}),
            (b"1300-0", {b"symbol": b"A", b"price": b"7", b"qty": b"1"}),
        ]
    )
    assert rows == [{"key": "A", "start": 0, "end": 1_000, "n": 2, "s": 4.0}]
    assert [(r.position, r.id) for r in rows.rejected] == [(1, b"200-0"), (2, b"bad")]
    assert "field 'price'=b'x': expected a finite number" in rows.rejected[0].error
    assert state.rejected == 2 and state.entries == 3


@core
def test_arrays_skip_bad_rows_and_take_the_rest(core):
    state = core(Window.tumbling(1_000, key="symbol").agg(n=Count(), s=Sum("price")))
    columns = state.add_arrays(
        np.array([100, 200, -5, 300, 1_500]),
        np.array(["A", None, "A", "A", "A"], dtype=object),
        {"price": np.array([1.0, 2.0, 3.0, math.inf, 4.0])},
    )
    assert columns["key"].tolist() == ["A"] and columns["n"].tolist() == [1] and columns["s"].tolist() == [1.0]
    assert [r.position for r in columns.rejected] == [1, 2, 3]
    assert "keys[1]=None" in columns.rejected[0].error and "times[2]=" in columns.rejected[1].error
    assert "field 'price'=" in columns.rejected[2].error
    codes = state.add_arrays(np.array([1_600, 2_500]), np.array([0, 0]), {"price": [1.0, 1.0]}, key_names=["A"])
    assert codes["start"].tolist() == [1_000] and codes["n"].tolist() == [2]
    with pytest.raises(ValueError, match="columns: missing \\['price'\\]"):
        state.add_arrays(np.array([1]), "A", {"qty": [1.0]})
    with pytest.raises(ValueError, match="column 'price' has 2 rows, times has 1"):
        state.add_arrays(np.array([1]), "A", {"price": [1.0, 2.0]})


@core
def test_key_none_keys_by_stream_name_and_time_can_come_from_a_field(core):
    state = core(Window.tumbling(1_000, time="ts").agg(n=Count()))
    reply = [
        [b"ticks:a", [(b"9-0", {b"ts": b"100"}), (b"10-0", {b"ts": b"2100"})]],
        [b"ticks:b", [(b"11-0", {b"ts": b"150"})]],
    ]
    rows = state.add_entries(reply)
    assert rows == [{"key": "ticks:a", "start": 0, "end": 1_000, "n": 1}]
    with pytest.raises(ValueError, match="time field 'ts'='soon': expected integer epoch milliseconds"):
        state.add({"ts": "soon"}, stream="ticks:a")
    assert sorted(row["key"] for row in state.flush()) == ["ticks:a", "ticks:b"]


@core
def test_batch_agents_messages_are_taken(core):
    state = core(Window.tumbling(1_000, key="symbol").agg(n=Count()))
    messages = [
        Message(topic="ticks", key=f"{ts}-0", data=(f"{ts}-0", {b"symbol": b"A", b"price": b"1", b"qty": b"1"}))
        for ts in (1, 2, 1_001)
    ]
    assert state.add_entries(messages) == [{"key": "A", "start": 0, "end": 1_000, "n": 2}]


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: Window.tumbling(0), "size_ms=0: expected an integer number of milliseconds >= 1"),
        (lambda: Window.tumbling(1.5), "size_ms=1.5"),
        (lambda: Window.hopping(10, 3), "size_ms=10 is not a multiple of step_ms=3"),
        (lambda: Window.sliding(), "give size_ms .* or entries="),
        (lambda: Window.sliding(10, entries=3), "give size_ms .* or entries="),
        (lambda: Window.session(-1), "gap_ms=-1"),
        (lambda: Window.volume_bars(0, "qty"), "units=0: expected a finite number > 0"),
        (lambda: Window.tumbling(10, emit="sometimes"), "emit='sometimes': expected 'final'"),
        (lambda: Window.tumbling(10, grace_ms=-1), "grace_ms=-1"),
        (lambda: Window.tumbling(10, key=""), "key='': expected a field name"),
        (lambda: Window.tumbling(10).agg(n=5), "aggregate n=5: expected Count()"),
        (lambda: Window.tumbling(10).agg(Count(), count=Sum("x")), "column 'count' twice"),
        (lambda: Window.tumbling(10).agg(start=Count()), "column 'start' twice \\(or a reserved name"),
        (lambda: Window.tumbling(10).start(), "a window needs at least one aggregate"),
        (lambda: VWAP("price", ""), "VWAP qty='': expected a field name"),
        (lambda: Reduce("x"), "Reduce: expected fn"),
    ],
)
def test_bad_window_arguments_are_clear_errors(make, message):
    with pytest.raises(ValueError, match=message):
        make()


@core
def test_snapshots_are_json_and_refuse_another_window_or_damage(core):
    window = Window.tumbling(1_000, key="symbol").agg(c=OHLC("price", "qty"))
    state = core(window)
    state.add(tick("A", 1.0), "100-0")
    saved = json.dumps(state.snapshot())
    other = core(Window.tumbling(2_000, key="symbol").agg(c=OHLC("price", "qty")))
    with pytest.raises(ValueError, match="taken from another window"):
        other.restore(saved)
    damaged = json.loads(saved)
    damaged["keys"][0]["windows"][0][1][0] = "many"
    state.add(tick("A", 2.0), "200-0")
    with pytest.raises(ValueError, match="record count='many'"):
        state.restore(damaged)
    assert state.entries == 2  # a refused snapshot leaves the state as it was
    state.restore(saved)
    assert state.entries == 1 and state.flush()[0]["c_trade_count"] == 1


def test_custom_reducers_function_and_trio_with_merge_and_snapshot():
    spread = Reduce("price", lambda values: max(values) - min(values), name="spread")
    trio = Reduce(
        "price",
        init=lambda: [0, 0.0],
        add=lambda s, v: [s[0] + 1, s[1] + v],
        merge=lambda a, b: [a[0] + b[0], a[1] + b[1]],
        result=lambda s: s[1] / s[0],
        name="avg",
    )
    window = Window.session(200, key="symbol", grace_ms=500).agg(spread, trio)
    state = window.start()
    assert isinstance(state, PythonWindowState)  # custom reducers run on the Python core
    for ts, price in ((0, 1.0), (300, 5.0), (150, 3.0)):  # 150 bridges the two sessions
        state.add(tick("A", price), f"{ts}-0")
    restored = window.start()
    restored.restore(json.loads(json.dumps(state.snapshot())))
    assert restored.flush() == [{"key": "A", "start": 0, "end": 300, "spread": 4.0, "avg": 3.0}]
    no_merge = Reduce("price", init=list, add=lambda s, v: s + [v])
    assert Window.tumbling(200).agg(no_merge).start().add({"price": 1.0}, "1-0") == []  # buckets never merge
    for make in (lambda: Window.session(200), lambda: Window.sliding(200), lambda: Window.sliding(entries=2)):
        with pytest.raises(ValueError, match="windows merge partial states: give Reduce\\(..., merge="):
            make().agg(no_merge)


def test_the_readme_candles_example_gives_fastohlc_candles_ready_for_a_stream():
    from streammachine.ohlc import PythonFastOHLC, format_candle_for_redis
    from streammachine.windows import candle_from_row

    candles = Window.tumbling(60_000, key="symbol", grace_ms=1_000).agg(OHLC("price", "volume")).start()
    reference = PythonFastOHLC([60_000])
    rng = np.random.default_rng(5)
    stamps = np.sort(rng.integers(0, 600_000, 500)).tolist()
    messages, out = [], []
    for ts, price, volume in zip(stamps, rng.normal(100, 1, 500).round(2).tolist(), rng.random(500).round(3).tolist()):
        fields = {b"symbol": b"AAPL", b"price": repr(price).encode(), b"volume": repr(volume).encode()}
        messages.append(Message(topic="ticks", key=f"{ts}-0", data=(f"{ts}-0".encode(), fields)))
        reference.update_tick("AAPL", price, volume, ts)
    for batch in range(0, 500, 50):
        out += [
            format_candle_for_redis(candle_from_row(r), r["key"], 60_000)
            for r in candles.add_entries(messages[batch : batch + 50])
        ]
    completed = reference.flush_interval("AAPL", 60_000)
    assert out == [format_candle_for_redis(c, "AAPL", 60_000) for c in completed] and len(out) >= 8
