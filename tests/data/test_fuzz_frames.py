"""Fuzzing the read-reply boundary: streams_to_dataframe and FastOHLC.process_stream_batch.

Any input gives a result or a ValueError (never another exception, never a crash); well-formed replies
in any of redis-py's shapes keep every entry; the compiled OHLC core (when built) agrees with the Python one.
"""

from __future__ import annotations

import math
from decimal import Decimal

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streammachine import streams_to_dataframe, streams_to_dataframe_fast
from streammachine.ohlc import CythonFastOHLC, PythonFastOHLC

scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=10), st.binary(max_size=10))
junk = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.tuples(inner, inner),
        st.dictionaries(st.one_of(st.text(max_size=4), st.binary(max_size=4)), inner, max_size=3),
    ),
    max_leaves=20,
)

ids = st.builds(lambda ms, seq: f"{ms}-{seq}", st.integers(0, 2**62), st.integers(0, 2**40))
numberish = st.one_of(
    st.integers(-(10**20), 10**20).map(str),
    st.floats().map(repr),
    st.sampled_from(["nan", "inf", "-inf", " 7 ", "1_000", "1e5", "0x10", "", "abc", "1.5.2"]),
    st.text(max_size=6),
)
field_values = st.one_of(numberish.map(str.encode), st.binary(max_size=8))
fields = st.dictionaries(st.sampled_from([b"price", b"volume", b"symbol", b"x", b"note"]), field_values, max_size=5)
entries = st.lists(st.tuples(ids.map(str.encode), fields), max_size=25)


def reply_shapes(name: bytes, batch: list) -> list:
    """The same entries as redis-py may hand them over: RESP2, RESP3, flat XRANGE, and decoded to str."""

    def decode(value):
        return value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else value

    as_str = [(decode(i), {decode(k): decode(v) for k, v in f.items()}) for i, f in batch]
    return [[[name, batch]], {name: [batch]}, batch, [[decode(name), as_str]]]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(junk)
def test_streams_to_dataframe_result_or_value_error(value):
    try:
        frame = streams_to_dataframe(value)
    except ValueError:
        return
    assert isinstance(frame, pd.DataFrame)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(entries)
def test_dataframe_keeps_every_entry_in_every_shape(batch):
    for shape in reply_shapes(b"ticks", batch)[:3]:
        frame = streams_to_dataframe(shape, include_sequence=True)
        assert len(frame) == len(batch)
        if batch:
            assert list(frame["id"]) == [i.decode() for i, _ in batch]
            assert list(frame["timestamp_ms"]) == [int(i.split(b"-")[0]) for i, _ in batch]
            assert list(frame["sequence"]) == [int(i.split(b"-")[1]) for i, _ in batch]
        fast = streams_to_dataframe_fast(shape)
        pd.testing.assert_frame_equal(fast, frame.drop(columns="sequence"))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(entries)
def test_numeric_columns_agree_with_int_and_float(batch):
    frame = streams_to_dataframe(batch)
    names = {k for _, f in batch for k in f}
    for name in names:
        values = [f.get(name) for _, f in batch]
        column = frame[name.decode()]
        # numbers only when every value reads back unchanged: the same integer text, or the same decimal value
        if column.dtype == np.int64:
            assert [str(n).encode() for n in column] == values, name
        elif column.dtype == np.float64:
            for raw, got in zip(values, column):
                if raw is None:
                    assert math.isnan(got)
                else:
                    assert math.isfinite(got) and Decimal(raw.decode()) == Decimal(repr(got)), (raw, got)
                    assert raw.strip() == raw and not raw.lstrip(b"-").startswith((b"00", b"+")), raw
        else:  # text; a missing value is None or NaN depending on the pandas version's string dtype
            got = [None if pd.isna(v) else v for v in column]
            assert [None if v is None else v.decode("utf-8", "replace") for v in values] == got


def test_trailing_nul_bytes_are_not_numbers():
    """numpy's fixed-width bytes drop trailing NULs: b"1\\x00" must not become the integer 1 (int() refuses it)."""
    frame = streams_to_dataframe([(b"1-0", {b"n": b"1\x00"}), (b"2-0", {b"n": b"2"})])
    assert not pd.api.types.is_numeric_dtype(frame["n"]) and list(frame["n"]) == ["1\x00", "2"]
    frame = streams_to_dataframe([("1-0", {"n": "2.5\x00"})])
    assert list(frame["n"]) == ["2.5\x00"]


def _ohlc_run(cls, reply):
    agg = cls([60_000, 300_000])
    try:
        taken = agg.process_stream_batch(reply)
    except ValueError as exc:
        return ("ValueError", str(exc))
    symbols = sorted(agg.symbols)
    candles = {
        (s, i): [
            (c.candle_start_ms, c.open, c.high, c.low, c.close, c.volume, c.trade_count) for c in agg.get_candles(s, i)
        ]
        for s in symbols
        for i in (60_000, 300_000)
    }
    return taken, agg.rejected, agg.tick_count, candles


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(junk)
def test_process_stream_batch_on_junk(value):
    result = _ohlc_run(PythonFastOHLC, value)
    if CythonFastOHLC is not None:
        assert _ohlc_run(CythonFastOHLC, value) == result


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(entries)
def test_process_stream_batch_counts_and_parity(batch):
    for shape, reply in enumerate(reply_shapes(b"ticks", batch)):
        result = _ohlc_run(PythonFastOHLC, reply)
        assert result[0] != "ValueError", result
        taken, rejected, _, _ = result
        assert taken + rejected == len(batch)
        stream = None if shape == 2 else b"ticks"  # a bare list of entries names no stream
        valid = 0
        for _, f in batch:
            try:
                price, volume = float(f[b"price"]), float(f.get(b"volume", b"0"))  # no volume: 0
                symbol = f.get(b"symbol", stream).decode("utf-8")  # no symbol: the stream's name
            except (KeyError, ValueError, AttributeError):
                continue
            valid += bool(math.isfinite(price) and math.isfinite(volume) and volume >= 0 and symbol)
        assert taken == valid
        if CythonFastOHLC is not None:
            assert _ohlc_run(CythonFastOHLC, reply) == result
