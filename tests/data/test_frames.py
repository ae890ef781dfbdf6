"""Read replies to DataFrames, pruning by age, and TimeSeriesBuffer."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st

from streammachine.data.frames import (
    TimeSeriesBuffer,
    prune_old_dataframe_rows,
    streams_to_dataframe,
    streams_to_dataframe_fast,
)

BASE = 1_700_000_000_000


@pytest.fixture
def two_streams(redis_url):
    client = redis.Redis.from_url(redis_url)
    client.xadd("prices", {"symbol": "AAPL", "price": "150.25", "size": "100"}, id=f"{BASE}-0")
    client.xadd("prices", {"symbol": "MSFT", "price": "300", "size": "7"}, id=f"{BASE}-1")
    client.xadd("prices", {"symbol": "AAPL", "price": "151", "size": "3", "note": "late"}, id=f"{BASE + 5}-0")
    client.xadd("events", {"kind": "open"}, id=f"{BASE + 1}-0")
    client.close()
    return redis_url


def xread(url, protocol, decode):
    client = redis.Redis.from_url(url, protocol=protocol, decode_responses=decode)
    try:
        return client.xread({"prices": 0, "events": 0})
    finally:
        client.close()


@pytest.mark.parametrize("protocol", [2, 3])
@pytest.mark.parametrize("decode", [False, True])
def test_real_replies_in_both_protocols(two_streams, protocol, decode):
    reply = xread(two_streams, protocol, decode)
    assert isinstance(reply, dict if protocol == 3 else list)
    df = streams_to_dataframe(reply, include_sequence=True)
    assert list(df.columns) == ["stream", "id", "timestamp_ms", "sequence", "symbol", "price", "size", "note", "kind"]
    assert df["stream"].tolist() == ["prices", "prices", "prices", "events"]
    assert df["id"].tolist() == [f"{BASE}-0", f"{BASE}-1", f"{BASE + 5}-0", f"{BASE + 1}-0"]
    assert df["timestamp_ms"].dtype == np.int64
    assert df["timestamp_ms"].tolist() == [BASE, BASE, BASE + 5, BASE + 1]
    assert df["sequence"].tolist() == [0, 1, 0, 0]
    assert df["price"].dtype == np.float64 and df["price"].tolist()[:3] == [150.25, 300.0, 151.0]
    assert df["size"].dtype == np.float64  # ints, but missing in the events row: NaN
    assert df["symbol"].tolist()[:3] == ["AAPL", "MSFT", "AAPL"]
    assert df["note"].isna().tolist() == [True, True, False, True]
    assert streams_to_dataframe_fast(reply).equals(streams_to_dataframe(reply))


def test_one_stream_keeps_ints_as_int64(two_streams):
    client = redis.Redis.from_url(two_streams)
    reply = client.xread({"prices": 0}, count=2)
    client.close()
    df = streams_to_dataframe(reply)
    assert df["size"].dtype == np.int64 and df["size"].tolist() == [100, 7]
    assert df["price"].dtype == np.float64


def test_xrange_entries(two_streams):
    client = redis.Redis.from_url(two_streams)
    df = streams_to_dataframe(client.xrange("prices"), stream_name_column=None)
    client.close()
    assert "stream" not in df.columns and len(df) == 3


def test_column_names_and_leaving_columns_out():
    reply = [[b"s", [(b"5-0", {b"v": b"1"})]]]
    df = streams_to_dataframe(reply, stream_name_column="src", id_column=None, timestamp_column="ms")
    assert list(df.columns) == ["src", "ms", "v"]


def test_a_field_named_like_a_column_is_an_error_not_overwritten():
    reply = [[b"s", [(b"5-0", {b"timestamp_ms": b"42"})]]]
    with pytest.raises(ValueError, match="timestamp_ms"):
        streams_to_dataframe(reply)
    assert streams_to_dataframe(reply, timestamp_column="id_ms")["timestamp_ms"].tolist() == [42]


def test_text_stays_text_when_one_value_does_not_parse():
    reply = [[b"s", [(b"1-0", {b"v": b"1"}), (b"2-0", {b"v": b"x"}), (b"3-0", {b"v": b"\xff"})]]]
    assert streams_to_dataframe(reply)["v"].tolist() == ["1", "x", "\ufffd"]


@pytest.mark.parametrize("convert", [streams_to_dataframe, streams_to_dataframe_fast])
@pytest.mark.parametrize("decode", [False, True])
def test_values_never_change_on_the_way_into_a_frame(redis_url, convert, decode):
    """Issue 11 item 7: a column becomes numbers only when every value reads back unchanged."""
    client = redis.Redis.from_url(redis_url, decode_responses=decode)
    sent = [
        {"zip": "00700", "account": "123456789012345678901", "reading": "nan", "code": "+7", "qty": "7", "px": "0.1"},
        {"zip": "02134", "account": "1", "reading": "2.5", "code": "8", "qty": "-12", "px": "1.50"},
        {"zip": "10001", "account": "2", "reading": "inf", "code": "9", "qty": "0", "px": "1e5"},
    ]
    for record in sent:
        client.xadd("readings", record)
    df = convert(client.xrange("readings"))
    client.close()
    for column in ("zip", "account", "reading", "code"):  # each holds a value a number would change
        assert not pd.api.types.is_numeric_dtype(df[column]), (column, df[column].dtype)
        assert df[column].tolist() == [record[column] for record in sent]
    assert df["qty"].dtype == np.int64 and df["qty"].tolist() == [7, -12, 0]
    assert df["px"].dtype == np.float64 and df["px"].tolist() == [0.1, 1.5, 100000.0]  # "1.50" is the number 1.5


def test_integers_with_gaps_stay_exact():
    """A missing value needs NaN, so a float column: integers a float cannot hold keep their text."""
    big = [("1-0", {"n": "9007199254740993"}), ("2-0", {"other": "x"}), ("3-0", {"n": "5"})]
    assert streams_to_dataframe(big)["n"].tolist()[::2] == ["9007199254740993", "5"]
    small = [("1-0", {"n": "9007199254740992"}), ("2-0", {"other": "x"})]
    column = streams_to_dataframe(small)["n"]
    assert column.dtype == np.float64 and column.tolist()[0] == 2**53


def test_empty_frames_prune_to_empty_frames():
    """Issue 11 item 7: pruning an empty frame (an empty buffer, an empty read) returns it empty, no ValueError."""
    for empty in (pd.DataFrame(), TimeSeriesBuffer(10).get(), streams_to_dataframe([])):
        pruned = prune_old_dataframe_rows(empty, 5, current_time=10.0)
        assert pruned.empty and list(pruned.columns) == list(empty.columns)
    assert list(TimeSeriesBuffer(10, timestamp_column="ts").get().columns) == ["ts"]


def test_empty_and_deleted_entries():
    assert streams_to_dataframe([]).empty
    assert streams_to_dataframe({}).columns.tolist() == ["stream", "id", "timestamp_ms"]
    df = streams_to_dataframe([[b"s", [(b"1-0", {}), (b"2-0", None), (b"3-0", {b"v": b"2"})]]])
    assert df["v"].isna().tolist() == [True, True, False]


@pytest.mark.parametrize(
    "bad, message",
    [
        ([[b"s", [(b"nope", {})]]], "malformed stream id b'nope'"),
        ([[b"s", [(b"1-0",)]]], "expected an \\(id, fields\\) entry"),
        ([[b"s", "entries"]], "expected a list of \\(id, fields\\) entries"),
        (42, "expected a stream read reply"),
        ([[1, 2, 3]], "expected \\[stream, entries\\]"),
    ],
)
def test_bad_input_names_the_value(bad, message):
    with pytest.raises(ValueError, match=message):
        streams_to_dataframe(bad)


field_values = st.one_of(
    st.integers(-(10**6), 10**6).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.text(max_size=5),
)
replies = st.lists(
    st.tuples(
        st.sampled_from(["a", "b"]),
        st.lists(
            st.tuples(
                st.integers(0, 10**13),
                st.integers(0, 9),
                st.dictionaries(st.sampled_from(["x", "y", "z"]), field_values, max_size=3),
            ),
            max_size=6,
        ),
    ),
    max_size=3,
)


@settings(max_examples=150, deadline=None)
@given(replies=replies, as_bytes=st.booleans(), resp3=st.booleans())
def test_any_reply_shape_gives_the_same_frame(replies, as_bytes, resp3):
    def enc(text):
        return text.encode() if as_bytes else text

    streams = [
        (enc(name), [(enc(f"{ms}-{seq}"), {enc(k): enc(v) for k, v in fields.items()}) for ms, seq, fields in entries])
        for name, entries in replies
    ]
    reply = {name: [entries] for name, entries in streams} if resp3 else [[n, e] for n, e in streams]
    reference = [[n.decode() if as_bytes else n, e] for n, e in streams]
    if resp3 and len({n for n, _ in streams}) < len(streams):
        return  # a dict cannot repeat a stream
    df = streams_to_dataframe(reply)
    assert df.equals(streams_to_dataframe_fast(reply))
    assert df.equals(streams_to_dataframe(reference))
    rows = [(n, ms, fields) for n, e in replies for ms, _, fields in e]
    assert df["timestamp_ms"].tolist() == [ms for _, ms, _ in rows]
    for column in ("x", "y", "z"):
        if column in df.columns:
            expected = [fields.get(column) for _, _, fields in rows]
            got = df[column].tolist()
            for want, have in zip(expected, got):
                if want is None:
                    assert pd.isna(have)
                elif df[column].dtype.kind in "if":  # every value parsed ("nan" text included)
                    number = int(want) if df[column].dtype.kind == "i" else float(want)
                    assert have == number or (np.isnan(have) and np.isnan(number))
                else:
                    assert have == want


# -- prune_old_dataframe_rows -----------------------------------------------------


def test_prune_keeps_rows_within_the_cutoff():
    df = pd.DataFrame({"timestamp_ms": [1_000, 5_000, 9_000, 10_000], "v": [1, 2, 3, 4]})
    kept = prune_old_dataframe_rows(df, 5, current_time=10.0)
    assert kept["v"].tolist() == [2, 3, 4]  # 5.0 s old exactly is kept
    assert len(df) == 4  # the input is untouched
    assert prune_old_dataframe_rows(df, 0, current_time=10.0)["v"].tolist() == [4]


def test_prune_defaults_to_the_wall_clock():
    import time

    now_ms = time.time() * 1000
    df = pd.DataFrame({"ts": [now_ms - 60_000, now_ms]})
    assert len(prune_old_dataframe_rows(df, 30, timestamp_column="ts")) == 1


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(cutoff_seconds=-1), "cutoff_seconds"),
        (dict(cutoff_seconds=float("nan")), "cutoff_seconds"),
        (dict(cutoff_seconds=5, timestamp_column="nope"), "'nope' is not a column"),
        (dict(cutoff_seconds=5, timestamp_column="name"), "epoch milliseconds"),
    ],
)
def test_prune_bad_arguments(kwargs, message):
    df = pd.DataFrame({"timestamp_ms": [1], "name": ["x"]})
    with pytest.raises(ValueError, match=message):
        prune_old_dataframe_rows(df, **kwargs)


# -- TimeSeriesBuffer -------------------------------------------------------------


def test_buffer_basics():
    buffer = TimeSeriesBuffer(max_age_seconds=10)
    assert len(buffer) == 0 and buffer.last_timestamp is None and buffer.get().empty
    buffer.append(pd.DataFrame({"timestamp_ms": [1_000, 2_000], "price": [1.0, 2.0], "symbol": ["A", "B"]}))
    buffer.append({"timestamp_ms": 3_000, "price": 3.0, "symbol": "C"})
    df = buffer.get()
    assert df.to_dict("list") == {
        "timestamp_ms": [1_000, 2_000, 3_000],
        "price": [1.0, 2.0, 3.0],
        "symbol": ["A", "B", "C"],
    }
    assert df["timestamp_ms"].dtype == np.int64 and df["symbol"].dtype == pd.DataFrame({"s": ["x"]})["s"].dtype
    assert len(buffer) == 3 and buffer.last_timestamp == 3_000
    df.loc[0, "price"] = 99.0
    assert buffer.get()["price"].tolist()[0] == 1.0  # get() hands out a copy
    buffer.clear()
    assert len(buffer) == 0 and buffer.last_timestamp is None


def test_buffer_age_is_relative_to_the_newest_timestamp():
    buffer = TimeSeriesBuffer(max_age_seconds=10)
    buffer.append({"timestamp_ms": [0, 5_000, 9_000], "v": [1, 2, 3]})
    buffer.append({"timestamp_ms": 15_000, "v": 4})
    assert buffer.get()["v"].tolist() == [2, 3, 4]  # 5_000 is exactly 10 s old: kept
    buffer.append({"timestamp_ms": 1_000, "v": 5})  # older than the window: dropped at once
    assert buffer.get()["v"].tolist() == [2, 3, 4]
    assert buffer.last_timestamp == 15_000


def test_buffer_max_rows_keeps_the_newest():
    buffer = TimeSeriesBuffer(max_age_seconds=1e9, max_rows=3)
    for i in range(10):
        buffer.append({"timestamp_ms": i, "v": i})
    assert buffer.get()["v"].tolist() == [7, 8, 9]


def test_buffer_holds_rows_in_time_order():
    buffer = TimeSeriesBuffer(max_age_seconds=100)
    buffer.append({"timestamp_ms": [10, 30], "v": ["a", "c"]})
    buffer.append({"timestamp_ms": [40, 20, 20], "v": ["d", "b1", "b2"]})
    buffer.append({"timestamp_ms": 30, "v": "c2"})  # equal times keep arrival order
    assert buffer.get()["v"].tolist() == ["a", "b1", "b2", "c", "c2", "d"]


def test_buffer_columns_may_come_and_go():
    buffer = TimeSeriesBuffer(max_age_seconds=100)
    buffer.append({"timestamp_ms": 1, "a": 1})
    buffer.append({"timestamp_ms": 2, "b": "x"})
    buffer.append({"timestamp_ms": 3, "a": 2.5, "b": "y"})
    df = buffer.get()
    assert df["a"].tolist()[0] == 1 and np.isnan(df["a"].tolist()[1]) and df["a"].tolist()[2] == 2.5
    assert [None if pd.isna(v) else v for v in df["b"].tolist()] == [None, "x", "y"]


def test_one_row_appends_widen_columns_as_needed():
    buffer = TimeSeriesBuffer(max_age_seconds=100)
    buffer.append({"timestamp_ms": 1, "v": 1})
    buffer.append({"timestamp_ms": 2, "v": 2})
    buffer.append({"timestamp_ms": 3, "v": 2.5})  # a float into an int column: widened, not truncated
    buffer.append({"timestamp_ms": 4, "v": "x"})
    buffer.append({"timestamp_ms": 5.5, "v": True})
    df = buffer.get()
    assert df["v"].tolist() == [1, 2, 2.5, "x", True]
    assert df["timestamp_ms"].tolist() == [1, 2, 3, 4, 5.5]
    with pytest.raises(ValueError, match="NaN"):
        buffer.append({"timestamp_ms": float("nan"), "v": 1})
    assert len(buffer) == 5

    ints = TimeSeriesBuffer(max_age_seconds=100)
    ints.append({"timestamp_ms": 1, "n": 1})
    ints.append({"timestamp_ms": 2, "n": 2**64 + 1})  # does not fit int64: widened, not an OverflowError
    assert ints.get()["n"].tolist() == [1, 2**64 + 1]


def test_buffer_keeps_pandas_dtypes():
    buffer = TimeSeriesBuffer(max_age_seconds=100)
    frame = pd.DataFrame(
        {"timestamp_ms": [1, 2], "cat": pd.Categorical(["x", "y"]), "n": pd.array([1, None], dtype="Int64")}
    )
    buffer.append(frame)
    buffer.append(frame.assign(timestamp_ms=[3, 4]))
    df = buffer.get()
    assert df["cat"].dtype == "category" and df["n"].dtype == "Int64"
    assert df["cat"].tolist() == ["x", "y", "x", "y"]


@pytest.mark.parametrize(
    "data, message",
    [
        ({"v": 1}, "no 'timestamp_ms' column"),
        ({"timestamp_ms": "soon", "v": 1}, "epoch milliseconds"),
        ({"timestamp_ms": float("nan")}, "NaN"),
        ([1, 2], "expects a DataFrame"),
        ({"timestamp_ms": [1, 2], "v": [1]}, "'v': expected 2 values"),
        ({"timestamp_ms": [1, 2], "v": 1}, "'v': expected 2 values"),
    ],
)
def test_buffer_bad_appends(data, message):
    buffer = TimeSeriesBuffer(max_age_seconds=100)
    with pytest.raises(ValueError, match=message):
        buffer.append(data)
    assert len(buffer) == 0


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(max_age_seconds=0),
        dict(max_age_seconds=float("inf")),
        dict(max_age_seconds=1, max_rows=0),
        dict(max_age_seconds="5"),
    ],
)
def test_buffer_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        TimeSeriesBuffer(**kwargs)


def test_buffer_memory_stays_bounded():
    buffer = TimeSeriesBuffer(max_age_seconds=1, max_rows=100)
    for i in range(20_000):
        buffer.append({"timestamp_ms": i, "v": float(i)})
    assert len(buffer) == 100
    assert buffer._capacity <= 4 * 100 + 64  # compacted, not grown without bound


appends = st.lists(
    st.lists(st.tuples(st.integers(0, 5_000), st.integers(0, 99)), min_size=1, max_size=8),
    max_size=25,
)


@settings(max_examples=200, deadline=None)
@given(
    appends=appends,
    max_age=st.sampled_from([0.5, 1, 3, 10]),
    max_rows=st.sampled_from([None, 1, 4, 50]),
    as_frames=st.booleans(),
)
def test_buffer_matches_a_naive_reference(appends, max_age, max_rows, as_frames):
    """Same result as: concat everything, stable-sort by time, keep the window and the last max_rows."""
    buffer = TimeSeriesBuffer(max_age_seconds=max_age, max_rows=max_rows)
    seen = []
    for rows in appends:
        data = {"timestamp_ms": [t for t, _ in rows], "v": [v for _, v in rows]}
        buffer.append(pd.DataFrame(data) if as_frames else data)
        seen.extend(rows)
        newest = max(t for t, _ in seen)
        expected = sorted(((t, v) for t, v in seen if t >= newest - max_age * 1000), key=lambda r: r[0])
        if max_rows is not None:
            expected = expected[-max_rows:]
        df = buffer.get()
        assert list(zip(df["timestamp_ms"].tolist(), df["v"].tolist())) == expected
        assert buffer.last_timestamp == newest
