"""OHLC code written against the reference (upstream) API, run as written, on a real server (issue 11 items 11-12)."""

from __future__ import annotations

from streammachine import FastOHLCConsumer, Message, create_ohlc_aggregator
from tests.helpers import wait_until

MINUTE = 60_000
BASE = 1_699_999_200_000  # a 15-minute boundary, long ago: the candles' time is the ticks' ids (data time)


async def test_the_reference_ohlc_snippet_emits_the_completed_candles(app_factory, sync_redis):
    """The reference's "Real-Time OHLC Aggregation" example, verbatim but for the App's construction: a candle
    is emitted once a tick of a later interval arrives (data time), once, and then flushed."""
    app = app_factory("market_data")
    agg = create_ohlc_aggregator(intervals=[60000, 300000, 900000])

    @app.agent("ticks", group="ohlc_workers")
    async def process_ticks(record: Message):
        msg = record.message
        symbol = msg.get("symbol", "UNKNOWN").encode("utf-8")
        price = float(msg.get("price", 0))
        volume = float(msg.get("volume", 0))
        ts_ms = int(record.key.split("-")[0])
        agg.update_tick(symbol, price, volume, ts_ms)
        for interval in [60000, 300000, 900000]:
            completed = agg.get_completed_candles(symbol, interval)
            for candle in completed:
                await app.send(
                    f"candles_{interval // 60000}m",
                    {
                        "symbol": symbol.decode("utf-8"),
                        "interval_ms": str(interval),
                        "open": str(candle.open),
                        "high": str(candle.high),
                        "low": str(candle.low),
                        "close": str(candle.close),
                        "volume": str(candle.volume),
                        "trade_count": str(candle.trade_count),
                    },
                )
            if completed:
                agg.flush_interval(symbol, interval)

    await app.startup()
    # 20 s apart over 6 minutes: minutes 0-5 complete once a tick of minute 6 arrives, 5-minute candle 0 too
    for i in range(19):
        sync_redis.xadd("ticks", {"symbol": "AAPL", "price": str(100 + i), "volume": "2"}, id=f"{BASE + i * 20_000}-0")
    await wait_until(lambda: app.stats("process_ticks").processed == 19, what="every tick handled")
    one_minute = [fields for _, fields in sync_redis.xrange("candles_1m")]
    assert [(c["open"], c["close"], c["trade_count"]) for c in one_minute] == [
        (str(100.0 + 3 * m), str(102.0 + 3 * m), "3") for m in range(6)
    ]
    five_minutes = [fields for _, fields in sync_redis.xrange("candles_5m")]
    assert [(c["open"], c["close"], c["volume"], c["trade_count"]) for c in five_minutes] == [
        ("100.0", "114.0", "30.0", "15")
    ]
    assert sync_redis.xlen("candles_15m") == 0


async def test_fastohlcconsumer_on_a_per_symbol_stream(app_factory, sync_redis):
    """Upstream's per-symbol streams (``ticks:AAPL``, no symbol field, sometimes no volume) give candles named
    after the stream, as process_stream_batch does."""
    app = app_factory()
    consumer = FastOHLCConsumer("ticks:AAPL", "bars", intervals=[1000], flush_every=0.05, grace_ms=60_000).attach(app)
    await app.startup()
    for i in range(6):
        fields = {"price": str(10 + i)} if i % 2 else {"price": str(10 + i), "volume": "1"}
        sync_redis.xadd("ticks:AAPL", fields, id=f"{BASE + i * 400}-0")
    await wait_until(lambda: app.stats(consumer.name).processed == 6, what="every tick handled")
    await wait_until(lambda: sync_redis.xlen("bars_1s") >= 2, timeout=5, what="two completed one-second candles")
    first, second = (fields for _, fields in sync_redis.xrange("bars_1s"))
    assert (first["symbol"], first["open"], first["close"], first["volume"], first["trade_count"]) == (
        "ticks:AAPL",
        "10.0",
        "12.0",
        "2.0",
        "3",
    )
    assert (second["open"], second["trade_count"]) == ("13.0", "2")
    assert consumer.aggregator.rejected == 0
