"""FastOHLCConsumer end to end on a real server: the reference example, attach(), the quiet-symbol timer."""

from __future__ import annotations

import pytest

from streammachine import App, FastOHLCConsumer, RedisConnection
from streammachine.ohlc import FastOHLC
from tests.helpers import wait_until

BASE = 1_700_000_040_000  # a 1 s, 5 s and 1 min boundary, long ago: data time, not wall time


def candles(sync_redis, stream):
    return [fields for _, fields in sync_redis.xrange(stream)]


def expected(ticks, interval, symbol="AAPL"):
    """What a plain FastOHLC makes of the same ticks: the completed candles, as stream fields."""
    from streammachine.ohlc import format_candle_for_redis

    agg = FastOHLC([interval])
    for sym, price, volume, ts in ticks:
        agg.update_tick(sym, price, volume, ts)
    return [format_candle_for_redis(c, symbol, interval) for c in agg.get_completed_candles(symbol, interval)]


TICKS = [("AAPL", 10.0 + i % 7, 1.0 + i % 3, BASE + i * 350) for i in range(40)]  # 14 s of ticks


async def send_ticks(app, ticks, stream="ticks"):
    for symbol, price, volume, ts in ticks:  # explicit ids: the candles' time comes from them
        client = await app.redis.get_client()
        await client.xadd(stream, {"symbol": symbol, "price": repr(price), "volume": repr(volume)}, id=f"{ts}-0")


async def test_the_reference_example(app_factory, redis_url, sync_redis, monkeypatch):
    """As in the reference: built without an App, started and stopped by the App's hooks."""
    monkeypatch.setenv("REDIS_URL", redis_url)  # the consumer finds the server as an App would
    app = app_factory("ohlc_realtime")
    consumer = FastOHLCConsumer(
        input_stream="ticks",
        output_stream_prefix="candles",
        intervals=[1000, 5000],
        group="ohlc_workers",
        price_field="price",
        volume_field="volume",
        flush_every=0.05,
        grace_ms=60_000,  # the timer must not complete the last candle while the test looks
    )

    @app.on_startup
    async def start_consumer():
        await consumer.start()

    @app.on_shutdown
    async def stop_consumer():
        await consumer.stop()

    await app.startup()
    await send_ticks(app, TICKS)
    want_1s, want_5s = expected(TICKS, 1000), expected(TICKS, 5000)
    assert len(want_1s) == 13 and len(want_5s) == 2
    await wait_until(lambda: len(candles(sync_redis, "candles_1s")) == 13, what="13 one-second candles")
    await wait_until(lambda: len(candles(sync_redis, "candles_5s")) == 2, what="2 five-second candles")
    assert candles(sync_redis, "candles_1s") == want_1s
    assert candles(sync_redis, "candles_5s") == want_5s
    await wait_until(lambda: sync_redis.xpending("ticks", "ohlc_workers")["pending"] == 0, what="all acked")
    await app.shutdown()
    assert consumer.emitted >= 15


async def test_attach_runs_it_as_an_app_agent(app_factory, sync_redis):
    app = app_factory()
    consumer = FastOHLCConsumer("ticks", "bars", intervals=[5000], flush_every=0.05, grace_ms=60_000).attach(app)
    spec = app.agents[consumer.name]
    assert spec.batch and spec.periodic == (0.05, consumer.flush_quiet) and spec.tables == (consumer._table,)
    await app.startup()
    await send_ticks(app, TICKS)
    await wait_until(lambda: len(candles(sync_redis, "bars_5s")) == 2, what="two candles")
    assert candles(sync_redis, "bars_5s") == expected(TICKS, 5000)
    await wait_until(lambda: app.stats(consumer.name).processed == len(TICKS), what="every tick handled")


async def test_bad_ticks_are_skipped_and_acknowledged(app_factory, sync_redis):
    app = app_factory()
    consumer = FastOHLCConsumer("ticks", "bars", intervals=[1000], flush_every=0.05, grace_ms=60_000).attach(app)
    await app.startup()
    client = await app.redis.get_client()
    await client.xadd("ticks", {"symbol": "AAPL", "price": "nope", "volume": "1"}, id=f"{BASE}-0")
    await client.xadd("ticks", {"symbol": "AAPL", "volume": "1"}, id=f"{BASE}-1")
    await client.xadd("ticks", {"symbol": "AAPL", "price": "5", "volume": "-2"}, id=f"{BASE}-2")
    await send_ticks(app, [("AAPL", 1.0, 1.0, BASE + 10), ("AAPL", 2.0, 1.0, BASE + 1000)])
    await wait_until(lambda: len(candles(sync_redis, "bars_1s")) == 1, what="one candle")
    assert candles(sync_redis, "bars_1s")[0]["trade_count"] == "1"
    assert consumer.aggregator.rejected == 3
    await wait_until(lambda: sync_redis.xpending("ticks", "ohlc_workers")["pending"] == 0, what="all acked")
    assert sync_redis.exists("ticks:dead") == 0


async def test_a_quiet_symbols_candle_is_sent_once_its_interval_passed(app_factory, sync_redis):
    app = app_factory()
    consumer = FastOHLCConsumer("live", "bars", intervals=[1000], flush_every=0.05, grace_ms=100).attach(app)
    await app.startup()
    await app.send("live", {"symbol": "AAPL", "price": 5.0, "volume": 2.0})  # id stamped by the server: now
    await wait_until(lambda: len(candles(sync_redis, "bars_1s")) == 1, timeout=5, what="the quiet candle")
    (candle,) = candles(sync_redis, "bars_1s")
    assert (candle["open"], candle["volume"], candle["trade_count"]) == ("5.0", "2.0", "1")
    runs = consumer.flush_runs
    await wait_until(lambda: consumer.flush_runs >= runs + 5, what="five more periodic flushes")
    assert len(candles(sync_redis, "bars_1s")) == 1  # sent once, not again


async def test_standalone_on_a_connection_of_its_own(redis_url, sync_redis):
    async with RedisConnection(url=redis_url) as connection:
        consumer = FastOHLCConsumer(
            "ticks", "bars", intervals=[1000], connection=connection, flush_every=0.05, grace_ms=60_000
        )
        await consumer.start()
        client = await connection.get_client()
        for i in range(3):
            await client.xadd("ticks", {"symbol": b"MSFT", "price": b"1.5", "volume": b"1"}, id=f"{BASE + i * 600}-0")
        await wait_until(lambda: len(candles(sync_redis, "bars_1s")) == 1, what="first candle")
        await consumer.stop()
        assert "running" not in repr(consumer)
        assert await connection.health_check()  # stop() leaves a connection it did not open alone


def test_output_stream_names_and_arguments():
    consumer = FastOHLCConsumer("t", "c", intervals=[60_000, 300_000, 3_600_000, 15_000, 250])
    assert list(consumer.output_streams.values()) == ["c_250ms", "c_15s", "c_1m", "c_5m", "c_1h"]
    assert FastOHLCConsumer("t", "c").aggregator.intervals == (60_000, 300_000)
    with pytest.raises(ValueError, match="grace_ms"):
        FastOHLCConsumer("t", "c", grace_ms=-1)
    with pytest.raises(ValueError, match="not both"):
        FastOHLCConsumer("t", "c", app=App("x"), connection=RedisConnection(url="redis://localhost:1"))
    with pytest.raises(ValueError):
        FastOHLCConsumer("t", "c", flush_every=0)
