"""FastOHLCConsumer survives crashes and failed writes: every candle exactly once, no tick counted twice.

Real servers and real processes: the consumer runs in a subprocess
(tests/ohlc_worker.py) that is SIGKILLed mid-stream, at chosen points (just
before / just after a commit of candles + aggregator snapshot + acks) and at an arbitrary
moment, then restarted. The candles read back from the output streams must
be those pandas makes of the same ticks, each once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import orjson

from streammachine import ConsumerConfig, RedisConnection
from streammachine.ohlc import FastOHLCConsumer
from streammachine.ohlc.consumer import STATE_KEY, state_table_name
from streammachine.state.table import KEY_PREFIX
from tests.helpers import wait_until, wait_until_sync
from tests.ohlc.test_ohlc_parity import pandas_candles

WORKER = Path(__file__).with_name("ohlc_worker.py")
INTERVALS = {1000: "bars_1s", 5000: "bars_5s", 60_000: "bars_1m"}
BASE = 1_700_000_000_000
SYMBOLS = ["AAPL", "MSFT", "GOOG", "\u00e9t\u00e9"]
KEY = KEY_PREFIX + state_table_name("ticks", "ohlc")


def make_ticks(count: int, seed: int = 3) -> list:
    """(symbol, price, volume, ms): strictly increasing ms (the stream ids), integer volumes (exact sums)."""
    rng = np.random.default_rng(seed)
    stamps = BASE + np.cumsum(rng.integers(1, 300, count))
    return [
        (SYMBOLS[s], round(float(p), 2), float(v), int(t))
        for s, p, v, t in zip(
            rng.integers(0, len(SYMBOLS), count),
            100 + rng.standard_normal(count).cumsum(),
            rng.integers(1, 50, count),
            stamps,
        )
    ]


def send(client, ticks) -> None:
    pipe = client.pipeline(transaction=False)
    for symbol, price, volume, ms in ticks:
        pipe.xadd("ticks", {"symbol": symbol, "price": repr(price), "volume": repr(volume)}, id=f"{ms}-0")
    pipe.execute()


def sentinels(ticks) -> list:
    """One tick per symbol far past the rest: it completes every candle of the real ticks (and stays open)."""
    end = ticks[-1][3] - ticks[-1][3] % 60_000 + 120_000
    return [(symbol, 1.0, 1.0, end + i) for i, symbol in enumerate(SYMBOLS)]


def emitted(client) -> dict:
    """interval -> [(symbol, start, open, high, low, close, volume, last_ts, trades)] as read back, in order."""
    out = {}
    for interval, stream in INTERVALS.items():
        rows = []
        for _, f in client.xrange(stream):
            assert f["interval_ms"] == str(interval)
            rows.append(
                (
                    f["symbol"],
                    int(f["candle_start_ms"]),
                    float(f["open"]),
                    float(f["high"]),
                    float(f["low"]),
                    float(f["close"]),
                    float(f["volume"]),
                    int(f["timestamp_ms"]),
                    int(f["trade_count"]),
                )
            )
        out[interval] = rows
    return out


def check_candles(client, ticks) -> None:
    """Every candle of ``ticks`` present exactly once, with pandas' values; nothing else."""
    got = emitted(client)
    for interval in INTERVALS:
        counts = Counter((row[0], row[1]) for row in got[interval])
        assert [k for k, n in counts.items() if n > 1] == [], f"duplicate {interval} ms candles"
        want = sorted((symbol, *row) for symbol, rows in pandas_candles(ticks, interval).items() for row in rows)
        assert sorted(got[interval]) == want, f"{interval} ms candles differ from pandas"


def checkpoint(client) -> dict:
    """The committed aggregator state (the stage table's ``state`` key): format, token, last_id, aggregator."""
    raw = client.hget(KEY, STATE_KEY)
    return orjson.loads(raw.split("|", 2)[2]) if raw is not None else {}


def drained(client, last_id: str) -> bool:
    """Every tick up to ``last_id`` applied, written and acknowledged."""
    group = {g["name"]: g for g in client.xinfo_groups("ticks")}.get("ohlc")
    return (
        group is not None
        and group["pending"] == 0
        and group["last-delivered-id"] == last_id
        and checkpoint(client).get("last_id") == last_id
    )


def start_worker(url: str, *args: str, name: str | None = None) -> subprocess.Popen:
    env = dict(os.environ)
    if name:
        env["STREAMMACHINE_CONSUMER_NAME"] = name  # the same name again: it takes back its own pending ticks
    return subprocess.Popen([sys.executable, str(WORKER), url, *args], env=env)


def wait_exit(process: subprocess.Popen, timeout: float = 30) -> int:
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"worker {process.args[2:]} still running after {timeout}s") from None


def test_sigkill_mid_stream_loses_nothing_and_doubles_nothing(redis_url, sync_redis):
    ticks = make_ticks(9000)
    parts = [ticks[:800], ticks[800:1600], ticks[1600:2400], ticks[2400:7000], ticks[7000:8000], ticks[8000:]]
    # (worker arguments, consumer name or None for a new one per process, how it ends)
    runs = [
        (["--crash-after", "5"], None, "self"),  # written, not yet acknowledged
        (["--crash-before", "4"], None, "self"),  # applied, not written
        (["--crash-after", "1"], "w1", "self"),  # right after the first write (the re-applied ticks)
        ([], "w1", "external"),  # SIGKILL from outside, mid-stream
        (["--crash-before", "2"], "w1", "self"),
        ([], None, "clean"),
    ]
    workers = []
    try:
        for part, (args, name, end) in zip(parts, runs):
            before = checkpoint(sync_redis).get("last_id")
            send(sync_redis, part)
            worker = start_worker(redis_url, *args, name=name)
            workers.append(worker)
            if end == "self":
                assert wait_exit(worker) == -signal.SIGKILL
            elif end == "external":
                wait_until_sync(
                    lambda: checkpoint(sync_redis).get("last_id") not in (None, before),
                    timeout=30,
                    interval=0.002,
                    what="some progress",
                )
                worker.kill()  # SIGKILL
                assert wait_exit(worker) == -signal.SIGKILL
        # the last worker runs on: the sentinels complete every remaining candle
        assert checkpoint(sync_redis).get("last_id") != f"{ticks[-1][3]}-0"  # it had work left
        ends = sentinels(ticks)
        send(sync_redis, ends)
        last_id = f"{ends[-1][3]}-0"
        wait_until_sync(lambda: drained(sync_redis, last_id), timeout=30, what="every tick applied and acknowledged")
        workers[-1].send_signal(signal.SIGTERM)
        assert wait_exit(workers[-1]) == 0
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
    check_candles(sync_redis, ticks)
    state = checkpoint(sync_redis)["aggregator"]
    assert state["tick_count"] == len(ticks) + len(ends)  # each tick counted once, across six processes
    assert state["rejected"] == state["late_ticks"] == 0


async def test_a_failed_write_is_retried_without_loss_or_double_count(redis_url, sync_redis):
    """The commit fails (an output key of the wrong type): the stage stops at that read, its ticks stay pending,
    nothing is half-written, nothing later is committed out of order; then it heals."""
    ticks = make_ticks(1500, seed=5)
    first, second = ticks[:700], ticks[700:]  # 1 min candles complete in both parts
    config = ConsumerConfig(count=50, block_ms=50, retry_delay_ms=20, claim_idle_ms=1000, max_deliveries=10_000)
    async with RedisConnection(url=redis_url) as connection:
        consumer = FastOHLCConsumer(
            "ticks",
            "bars",
            intervals=list(INTERVALS),
            group="ohlc",
            connection=connection,
            flush_every=0.05,
            grace_ms=10**9,
            consumer_config=config,
        )
        await consumer.start()
        try:
            send(sync_redis, first)
            await wait_until(lambda: drained(sync_redis, f"{first[-1][3]}-0"), what="the first ticks written")
            saved_1m = sync_redis.xrange("bars_1m")
            sync_redis.delete("bars_1m")
            # the 1 min candles come last in a write: the others before them must not be written either
            sync_redis.set("bars_1m", "not a stream")  # every write that has a 1 min candle now fails

            send(sync_redis, second)
            await wait_until(lambda: consumer.stats.commit_failures >= 2, what="failing commits")
            saved = checkpoint(sync_redis)
            written = {stream: sync_redis.xlen(stream) for stream in ("bars_1s", "bars_5s")}
            failures = consumer.stats.commit_failures
            await wait_until(lambda: consumer.stats.commit_failures >= failures + 2, 30, what="more failing commits")
            assert sync_redis.xpending("ticks", "ohlc")["pending"] > 0  # the failed ones are not acknowledged
            assert checkpoint(sync_redis) == saved  # a failing commit writes nothing: not the snapshot...
            assert {s: sync_redis.xlen(s) for s in written} == written  # ...nor any of the candles before the bad one
            assert saved["aggregator"]["tick_count"] < len(ticks)  # the failing ticks are not in the committed state

            sync_redis.delete("bars_1m")  # healed: the next retry writes
            await wait_until(lambda: drained(sync_redis, f"{ticks[-1][3]}-0"), what="all written after healing")
            ends = sentinels(ticks)
            send(sync_redis, ends)
            await wait_until(lambda: drained(sync_redis, f"{ends[-1][3]}-0"), what="the sentinels")
        finally:
            await consumer.stop()
    healed_1m = sync_redis.xrange("bars_1m")
    sync_redis.delete("bars_1m")
    for _, fields in saved_1m + healed_1m:  # put the 1 min candles back together, in order
        sync_redis.xadd("bars_1m", fields)
    check_candles(sync_redis, ticks)
    assert checkpoint(sync_redis)["aggregator"]["tick_count"] == len(ticks) + len(ends)
