"""FastOHLC behaviour, for each core that is available (compiled and pure Python)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import redis

from streammachine.ohlc import (
    _HAS_FAST_OHLC_CYTHON,
    Candle,
    CythonFastOHLC,
    FastOHLC,
    PythonFastOHLC,
    create_ohlc_aggregator,
    format_candle_for_redis,
    interval_suffix,
    parse_stream_id_timestamp,
)
from streammachine.ohlc.aggregator import choose_implementation

MINUTE = 60_000
BASE = 1_638_360_000_000  # a minute (and 5-minute) boundary
IMPLEMENTATIONS = [PythonFastOHLC] + ([CythonFastOHLC] if CythonFastOHLC is not None else [])


@pytest.fixture(params=IMPLEMENTATIONS, ids=lambda cls: cls.__name__)
def make(request):
    return request.param


def ohlcv(candle: Candle):
    return candle.open, candle.high, candle.low, candle.close, candle.volume, candle.trade_count


# -- choosing the implementation ---------------------------------------------


def test_fastohlc_says_which_core_it_is():
    assert _HAS_FAST_OHLC_CYTHON == (FastOHLC is CythonFastOHLC) == FastOHLC.compiled
    assert choose_implementation(pure_python=True) is PythonFastOHLC
    assert choose_implementation() is (CythonFastOHLC or PythonFastOHLC)  # compiled whenever it is built


def test_create_ohlc_aggregator_defaults_to_one_and_five_minutes():
    assert create_ohlc_aggregator().intervals == (60_000, 300_000)
    assert create_ohlc_aggregator([900_000, 60_000, 60_000]).intervals == (60_000, 900_000)
    assert FastOHLC().intervals == (60_000, 300_000)


@pytest.mark.parametrize("bad", [[], [0], [-60_000], [1.5], ["60000"], [True], "60000"])
def test_bad_intervals_are_refused(make, bad):
    with pytest.raises(ValueError, match="interval"):
        make(bad)


# -- candle semantics ----------------------------------------------------------


def test_candles_are_aligned_to_the_epoch(make):
    agg = make([MINUTE, 5 * MINUTE])
    agg.update_tick("AAPL", 10.0, 1.0, BASE + 59_999)
    agg.update_tick("AAPL", 11.0, 2.0, BASE + 60_000)
    assert [c.candle_start_ms for c in agg.get_candles("AAPL", MINUTE)] == [BASE, BASE + MINUTE]
    (five,) = agg.get_candles("AAPL", 5 * MINUTE)
    assert five.candle_start_ms == BASE
    assert ohlcv(five) == (10.0, 11.0, 10.0, 11.0, 3.0, 2)
    assert five.timestamp_ms == BASE + 60_000  # the latest tick in it


def test_open_and_close_go_by_timestamp_not_arrival(make):
    agg = make([MINUTE])
    agg.update_tick("AAPL", 2.0, 1.0, BASE + 500)
    agg.update_tick("AAPL", 1.0, 1.0, BASE + 100)  # earlier, arrives later: it opens
    agg.update_tick("AAPL", 3.0, 1.0, BASE + 900)
    agg.update_tick("AAPL", 4.0, 1.0, BASE + 800)  # later arrival, earlier time: does not close
    (candle,) = agg.get_candles("AAPL", MINUTE)
    assert (candle.open, candle.close, candle.high, candle.low) == (1.0, 3.0, 4.0, 1.0)
    assert candle.timestamp_ms == BASE + 900


def test_ties_in_time_go_by_arrival(make):
    agg = make([MINUTE])
    for price in (5.0, 6.0, 7.0):
        agg.update_tick("AAPL", price, 1.0, BASE + 10)
    (candle,) = agg.get_candles("AAPL", MINUTE)
    assert (candle.open, candle.close) == (5.0, 7.0)


def test_bytes_and_str_symbols_are_the_same_symbol(make):
    agg = make([MINUTE])
    agg.update_tick(b"AAPL", 1.0, 1.0, BASE)
    agg.update_tick("AAPL", 2.0, 1.0, BASE + 1)
    assert agg.symbols == ["AAPL"]
    assert agg.get_candles(b"AAPL", MINUTE) == agg.get_candles("AAPL", MINUTE)
    assert agg.get_candles("AAPL", MINUTE)[0].trade_count == 2
    assert agg.get_candles("MSFT", MINUTE) == []
    with pytest.raises(ValueError, match="interval 1234"):
        agg.get_candles("AAPL", 1234)


def test_a_candle_is_complete_once_a_tick_reaches_its_end(make):
    agg = make([MINUTE])
    agg.update_tick("AAPL", 1.0, 1.0, BASE)
    agg.update_tick("AAPL", 1.0, 1.0, BASE + MINUTE - 1)
    assert agg.get_completed_candles("AAPL", MINUTE) == []
    agg.update_tick("AAPL", 2.0, 1.0, BASE + MINUTE)  # end <= latest tick: complete
    assert [c.candle_start_ms for c in agg.get_completed_candles("AAPL", MINUTE)] == [BASE]
    assert len(agg.get_candles("AAPL", MINUTE)) == 2


def test_completion_is_per_symbol(make):
    agg = make([MINUTE])
    agg.update_tick("AAPL", 1.0, 1.0, BASE)
    agg.update_tick("MSFT", 1.0, 1.0, BASE + 10 * MINUTE)
    assert agg.get_completed_candles("AAPL", MINUTE) == []
    assert agg.latest_timestamp("AAPL") == BASE and agg.latest_timestamp("MSFT") == BASE + 10 * MINUTE


def test_as_of_completes_a_quiet_symbol(make):
    agg = make([MINUTE])
    agg.update_tick("AAPL", 1.0, 1.0, BASE + 5)
    assert agg.get_completed_candles("AAPL", MINUTE, as_of_ms=BASE + MINUTE - 1) == []
    assert len(agg.get_completed_candles("AAPL", MINUTE, as_of_ms=BASE + MINUTE)) == 1
    (flushed,) = agg.flush_interval("AAPL", MINUTE, as_of_ms=BASE + MINUTE)
    assert flushed.candle_start_ms == BASE
    assert agg.get_candles("AAPL", MINUTE) == []


def test_flush_removes_completed_candles_and_late_ticks_make_no_duplicates(make):
    agg = make([MINUTE, 5 * MINUTE])
    agg.update_tick("AAPL", 1.0, 1.0, BASE + 1_000)
    agg.update_tick("AAPL", 2.0, 1.0, BASE + MINUTE + 1_000)
    flushed = agg.flush_interval("AAPL", MINUTE)
    assert [c.candle_start_ms for c in flushed] == [BASE]
    assert [c.candle_start_ms for c in agg.get_candles("AAPL", MINUTE)] == [BASE + MINUTE]
    assert agg.flush_interval("AAPL", MINUTE) == []  # nothing more is complete

    agg.update_tick("AAPL", 9.0, 5.0, BASE + 2_000)  # belongs to the flushed minute
    assert agg.late_ticks == 1
    assert agg.tick_count == 3
    assert agg.get_completed_candles("AAPL", MINUTE) == []  # no second candle for BASE
    assert [c.candle_start_ms for c in agg.get_candles("AAPL", MINUTE)] == [BASE + MINUTE]
    # the 5-minute candle was not flushed: the tick still counts there
    (five,) = agg.get_candles("AAPL", 5 * MINUTE)
    assert (five.high, five.volume, five.trade_count) == (9.0, 7.0, 3)


def test_flush_seals_time_even_without_a_candle_there(make):
    agg = make([MINUTE])
    agg.update_tick("AAPL", 1.0, 1.0, BASE + 3 * MINUTE)
    assert agg.flush_interval("AAPL", MINUTE) == []
    agg.update_tick("AAPL", 1.0, 1.0, BASE + MINUTE)  # its minute was already complete and flushed
    assert agg.late_ticks == 1
    assert [c.candle_start_ms for c in agg.get_candles("AAPL", MINUTE)] == [BASE + 3 * MINUTE]


def test_candles_are_snapshots(make):
    agg = make([MINUTE])
    agg.update_tick("AAPL", 1.0, 1.0, BASE)
    (before,) = agg.get_candles("AAPL", MINUTE)
    agg.update_tick("AAPL", 5.0, 1.0, BASE + 1)
    assert before.high == 1.0
    with pytest.raises(AttributeError):
        before.high = 3.0


def test_candles_as_dicts(make):
    agg = make([MINUTE])
    agg.update_tick("AAPL", 1.5, 2.0, BASE + 7)
    assert agg.get_candles_as_dicts("AAPL", MINUTE) == [
        {
            "candle_start_ms": BASE,
            "open": 1.5,
            "high": 1.5,
            "low": 1.5,
            "close": 1.5,
            "volume": 2.0,
            "timestamp_ms": BASE + 7,
            "trade_count": 1,
        }
    ]


def test_clear_forgets_everything(make):
    agg = make([MINUTE])
    agg.update_tick("AAPL", 1.0, 1.0, BASE)
    with pytest.raises(ValueError):
        agg.update_tick("AAPL", math.nan, 1.0, BASE)
    agg.clear()
    assert (agg.symbols, agg.tick_count, agg.late_ticks, agg.rejected) == ([], 0, 0, 0)
    assert agg.get_candles("AAPL", MINUTE) == []
    agg.update_tick("AAPL", 2.0, 1.0, BASE)  # usable after clear (the compiled core's caches are reset)
    assert agg.get_candles("AAPL", MINUTE)[0].open == 2.0


def test_numpy_and_int_inputs_are_accepted(make):
    agg = make([MINUTE])
    agg.update_tick("AAPL", np.float32(1.5), np.int64(3), np.int64(BASE))
    agg.update_tick("AAPL", 2, 1, BASE + 1)
    agg.update_tick("AAPL", 3.0, 1.0, float(BASE + 2))
    (candle,) = agg.get_candles("AAPL", MINUTE)
    assert ohlcv(candle) == (1.5, 3.0, 1.5, 3.0, 5.0, 3)


# -- bad input ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, message",
    [
        (("AAPL", math.nan, 1.0, BASE), "price=nan"),
        (("AAPL", math.inf, 1.0, BASE), "price=inf"),
        (("AAPL", "150.25", 1.0, BASE), "price='150.25'"),
        (("AAPL", None, 1.0, BASE), "price=None"),
        (("AAPL", 1.0, -1.0, BASE), "volume=-1.0"),
        (("AAPL", 1.0, math.nan, BASE), "volume=nan"),
        (("AAPL", 1.0, 1.0, -5), "timestamp_ms=-5"),
        (("AAPL", 1.0, 1.0, "1638360000000"), "timestamp_ms='1638360000000'"),
        (("AAPL", 1.0, 1.0, 2**63), "timestamp_ms="),
        ((None, 1.0, 1.0, BASE), "symbol None"),
        ((b"\xff", 1.0, 1.0, BASE), "symbol b'\\\\xff'"),
        (("", 1.0, 1.0, BASE), "symbol ''"),
    ],
)
def test_update_tick_refuses_bad_values_naming_them(make, args, message):
    agg = make([MINUTE])
    agg.update_tick("AAPL", 1.0, 1.0, BASE)
    with pytest.raises(ValueError, match=message):
        agg.update_tick(*args)
    assert agg.rejected == 1
    assert agg.tick_count == 1
    assert agg.get_candles("AAPL", MINUTE)[0].trade_count == 1


def test_update_arrays_skips_and_counts_bad_rows(make):
    agg = make([MINUTE])
    taken = agg.update_arrays(
        np.array(["AAPL", "AAPL", None, "AAPL", "AAPL", b"AAPL", 7], dtype=object),
        np.array([1.0, math.nan, 1.0, 2.0, 3.0, 4.0, 1.0]),
        np.array([1.0, 1.0, 1.0, -1.0, 1.0, 1.0, 1.0]),
        np.array([BASE, BASE, BASE, BASE, -1, BASE + 1, BASE]),
    )
    assert taken == 2
    assert agg.rejected == 5
    (candle,) = agg.get_candles("AAPL", MINUTE)
    assert ohlcv(candle) == (1.0, 4.0, 1.0, 4.0, 2.0, 2)


def test_update_arrays_with_one_symbol_and_lists(make):
    agg = make([MINUTE])
    assert agg.update_arrays("AAPL", [1.0, 2.0, "x"], [1, 1, 1], [BASE, BASE + MINUTE, BASE]) == 2
    assert agg.rejected == 1
    assert [c.open for c in agg.get_candles("AAPL", MINUTE)] == [1.0, 2.0]


def test_update_arrays_refuses_mismatched_lengths(make):
    agg = make([MINUTE])
    with pytest.raises(ValueError, match="length"):
        agg.update_arrays(["A", "B"], [1.0], [1.0], [BASE])
    assert agg.tick_count == 0


# -- stream batches, from a real server ------------------------------------------


@pytest.fixture
def tick_stream(redis_url):
    client = redis.Redis.from_url(redis_url)
    rows = [
        ("AAPL", "100.5", "10"),
        ("MSFT", "300", "1"),
        ("AAPL", "101.25", "5"),
        ("AAPL", "not-a-price", "1"),
        ("MSFT", "299.5", "-3"),
    ]
    for i, (symbol, price, volume) in enumerate(rows):
        client.xadd("ticks", {"symbol": symbol, "price": price, "volume": volume}, id=f"{BASE + i * 1000}-0")
    client.xadd("ticks", {"symbol": "AAPL", "volume": "1"}, id=f"{BASE + MINUTE}-0")  # no price
    client.xadd("ticks", {"symbol": "AAPL", "price": "102", "volume": "2"}, id=f"{BASE + MINUTE}-1")
    client.xgroup_create("ticks", "ohlc", id="0")
    client.close()
    return redis_url


def read(url, protocol, decode, group):
    client = redis.Redis.from_url(url, protocol=protocol, decode_responses=decode)
    try:
        if group:
            return client.xreadgroup("ohlc", f"c{protocol}{decode}", {"ticks": ">"})
        return client.xread({"ticks": 0})
    finally:
        client.close()


@pytest.mark.parametrize("protocol", [2, 3])
@pytest.mark.parametrize("decode", [False, True])
@pytest.mark.parametrize("group", [False, True])
def test_process_stream_batch_takes_real_replies(make, tick_stream, protocol, decode, group):
    reply = read(tick_stream, protocol, decode, group)
    assert isinstance(reply, dict if protocol == 3 else list)
    agg = make([MINUTE])
    assert agg.process_stream_batch(reply) == 4
    assert agg.rejected == 3
    first, second = agg.get_candles("AAPL", MINUTE)
    assert ohlcv(first) == (100.5, 101.25, 100.5, 101.25, 15.0, 2)
    assert first.timestamp_ms == BASE + 2000  # time comes from the stream id
    assert (second.candle_start_ms, second.close) == (BASE + MINUTE, 102.0)
    assert ohlcv(agg.get_candles("MSFT", MINUTE)[0]) == (300.0, 300.0, 300.0, 300.0, 1.0, 1)


def test_process_stream_batch_takes_xrange_entries(make, tick_stream):
    client = redis.Redis.from_url(tick_stream)
    entries = client.xrange("ticks")
    client.close()
    agg = make([MINUTE])
    assert agg.process_stream_batch(entries) == 4


def test_process_stream_batch_with_other_field_names(make):
    agg = make([MINUTE])
    entries = [(b"%d-0" % BASE, {b"s": b"X", b"p": b"1.5", b"q": b"2"}), (b"%d-1" % BASE, {b"s": b"X", b"p": b"2"})]
    assert agg.process_stream_batch(entries, price_field="p", volume_field="q", symbol_field="s") == 2
    assert agg.rejected == 0
    assert ohlcv(agg.get_candles("X", MINUTE)[0]) == (1.5, 2.0, 1.5, 2.0, 2.0, 2)  # no volume field: volume 0


@pytest.mark.parametrize("protocol", [2, 3])
def test_per_symbol_streams_use_the_stream_name_as_the_symbol(make, redis_url, protocol):
    """Issue 11 item 11 (upstream compatibility): ticks without a symbol field belong to their stream, and a
    tick without a volume counts with volume 0 instead of being dropped."""
    client = redis.Redis.from_url(redis_url, protocol=protocol)
    client.xadd("ticks:AAPL", {"price": "100", "volume": "3"}, id=f"{BASE}-0")
    client.xadd("ticks:AAPL", {"price": "101"}, id=f"{BASE + 1000}-0")  # no volume
    client.xadd("ticks:MSFT", {"price": "300", "volume": "1"}, id=f"{BASE}-0")
    client.xadd("ticks:MSFT", {"price": "301", "volume": "1", "symbol": "MSFT.O"}, id=f"{BASE + 5}-0")
    reply = client.xread({"ticks:AAPL": 0, "ticks:MSFT": 0})
    client.close()
    agg = make([MINUTE])
    assert agg.process_stream_batch(reply) == 4 and agg.rejected == 0
    assert sorted(agg.symbols) == ["MSFT.O", "ticks:AAPL", "ticks:MSFT"]
    assert ohlcv(agg.get_candles("ticks:AAPL", MINUTE)[0]) == (100.0, 101.0, 100.0, 101.0, 3.0, 2)
    assert ohlcv(agg.get_candles(b"ticks:MSFT", MINUTE)[0]) == (300.0, 300.0, 300.0, 300.0, 1.0, 1)
    # a bare list of entries names no stream: a tick without a symbol has none, and is rejected
    assert agg.process_stream_batch([(b"%d-0" % BASE, {b"price": b"1"})]) == 0 and agg.rejected == 1
    # a volume that is there but not a number is still a bad tick
    assert agg.process_stream_batch([[b"ticks:X", [(b"%d-0" % BASE, {b"price": b"1", b"volume": b"lots"})]]]) == 0


def test_completion_accepts_upstreams_positional_before_timestamp(make):
    """Issue 11 item 12: get_completed_candles/flush_interval(symbol, interval, before_timestamp), as upstream
    calls them: exactly the candles that ended at or before that time (as_of_ms= only moves the horizon forward)."""
    agg = make([MINUTE])
    for minute in range(4):
        agg.update_tick("AAPL", 1.0 + minute, 1.0, BASE + minute * MINUTE + 5)
    starts = lambda candles: [c.candle_start_ms for c in candles]  # noqa: E731
    assert starts(agg.get_completed_candles("AAPL", MINUTE)) == [BASE, BASE + MINUTE, BASE + 2 * MINUTE]
    assert starts(agg.get_completed_candles("AAPL", MINUTE, BASE + 2 * MINUTE)) == [BASE, BASE + MINUTE]
    assert starts(agg.get_completed_candles("AAPL", MINUTE, BASE + 2 * MINUTE - 1)) == [BASE]
    assert len(agg.get_completed_candles("AAPL", MINUTE, as_of_ms=BASE + 2 * MINUTE)) == 3  # never back
    assert starts(agg.get_completed_candles("AAPL", MINUTE, BASE + 5 * MINUTE)) == [BASE + i * MINUTE for i in range(4)]
    assert starts(agg.flush_interval("AAPL", MINUTE, BASE + MINUTE)) == [BASE]
    assert starts(agg.flush_interval(b"AAPL", MINUTE, before_timestamp=BASE + 3 * MINUTE)) == [
        BASE + MINUTE,
        BASE + 2 * MINUTE,
    ]
    assert starts(agg.get_candles("AAPL", MINUTE)) == [BASE + 3 * MINUTE]
    with pytest.raises(ValueError, match="not both"):
        agg.get_completed_candles("AAPL", MINUTE, BASE, as_of_ms=BASE)
    with pytest.raises(ValueError, match="before_timestamp"):
        agg.flush_interval("AAPL", MINUTE, "soon")


@pytest.mark.parametrize(
    "reply",
    [
        [(b"12-", {b"symbol": b"A", b"price": b"1", b"volume": b"1"})],
        [(b"abc-0", {b"symbol": b"A", b"price": b"1", b"volume": b"1"})],
        [(b"1-0", None)],
        [(b"1-0", {b"symbol": b"A", b"price": b"inf", b"volume": b"1"})],
        [(b"1-0", {b"symbol": b"", b"price": b"1", b"volume": b"1"})],
        [[b"ticks", [("1-0",), "junk", (b"1-0", {b"price": b"1"}, "extra")]]],
    ],
)
def test_process_stream_batch_skips_bad_rows(make, reply):
    agg = make([MINUTE])
    assert agg.process_stream_batch(reply) == 0
    assert agg.rejected >= 1
    assert agg.tick_count == 0


@pytest.mark.parametrize("reply", [42, "ticks", [["ticks", "not entries"]]])
def test_process_stream_batch_refuses_a_reply_of_the_wrong_shape(make, reply):
    with pytest.raises(ValueError, match="expected"):
        make([MINUTE]).process_stream_batch(reply)


def test_empty_replies_are_fine(make):
    agg = make([MINUTE])
    for reply in (None, [], {}, [[b"ticks", []]], {b"ticks": [[]]}):
        assert agg.process_stream_batch(reply) == 0
    assert agg.rejected == 0


# -- helpers -------------------------------------------------------------------------


def test_parse_stream_id_timestamp():
    assert parse_stream_id_timestamp("1638360000000-0") == 1638360000000
    assert parse_stream_id_timestamp(b"1638360000000-17") == 1638360000000
    for bad in ("1638360000000", "abc-0", "-0", "1-", "1-2-3", " 1-0", "\u0661-0", 5, None, f"{2**63}-0"):
        with pytest.raises(ValueError, match="stream id"):
            parse_stream_id_timestamp(bad)


def test_format_candle_for_redis(make):
    agg = make([MINUTE])
    agg.update_tick("AAPL", 100.5, 3.0, BASE + 10)
    agg.update_tick("AAPL", 0.1 + 0.2, 1.0, BASE + 20)
    (candle,) = agg.get_candles("AAPL", MINUTE)
    record = format_candle_for_redis(candle, b"AAPL", MINUTE)
    assert record == {
        "symbol": "AAPL",
        "interval_ms": "60000",
        "candle_start_ms": str(BASE),
        "open": "100.5",
        "high": "100.5",
        "low": "0.30000000000000004",
        "close": "0.30000000000000004",
        "volume": "4.0",
        "timestamp_ms": str(BASE + 20),
        "trade_count": "2",
    }
    assert float(record["low"]) == candle.low  # reads back exactly
    assert format_candle_for_redis(candle.as_dict(), "AAPL", MINUTE) == record


@pytest.mark.parametrize(
    "interval, suffix",
    [
        (60_000, "1m"),
        (300_000, "5m"),
        (3_600_000, "1h"),
        (86_400_000, "24h"),
        (15_000, "15s"),
        (250, "250ms"),
        (90_000, "90s"),
    ],
)
def test_interval_suffix(interval, suffix):
    assert interval_suffix(interval) == suffix
