"""OHLC and TimeSeriesBuffer throughput, with their pandas baselines measured in the same run.

    python benchmarks/bench_ohlc.py [--ticks 5000000] [--stream-ticks 200000] [--rows 100000] [--repeat 3]

OHLC (intervals 1m + 5m, 1 and 100 symbols, the same synthetic ticks for
every path: one day of trades, a random walk in price):

- pandas:   DataFrame + to_datetime index + groupby(symbol).resample(rule)
            .agg({"price": "ohlc", "volume": "sum"}) for both rules; the
            reference everything is compared with;
- update_tick (compiled / Python): one call per tick from a Python loop (the
            loop's own cost is included and shown separately);
- update_arrays (compiled / Python): the whole batch in one call;
- process_stream_batch (compiled / Python): replies read with XREADGROUP
            COUNT 1000 from a private server (hiredis, bytes), --stream-ticks
            of them, so this row uses fewer ticks.
- FastOHLCConsumer end to end: the same --stream-ticks ticks in a stream of
            a private server, consumed by a FastOHLCConsumer (COUNT 1000):
            from start() until every tick was handled (read, aggregate, then
            candles + aggregator snapshot + acks in one commit per read).

The Python core's figures include aggregating what it buffered. Each figure
is the best of --repeat runs (the machine is shared; the best run is the
least disturbed one).

TimeSeriesBuffer: single-row appends into a buffer holding --rows rows
(max_rows), as 1-row DataFrames and as dicts, against the naive way:
pd.concat the whole frame with each row and keep the last --rows.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import tempfile
import time
from typing import Callable, List, Optional, Tuple

import numpy as np
import pandas as pd
import redis

from streammachine.config import ConsumerConfig
from streammachine.data.frames import TimeSeriesBuffer
from streammachine.embedded import EmbeddedServer
from streammachine.ohlc import CythonFastOHLC, FastOHLCConsumer, PythonFastOHLC
from streammachine.redis.connection import RedisConnection

INTERVALS = (60_000, 300_000)
START_MS = 1_700_000_000_000 - 1_700_000_000_000 % 86_400_000
DAY_MS = 86_400_000


def make_ticks(count: int, symbols: int, seed: int = 1):
    rng = np.random.default_rng(seed)
    names = np.array([f"S{i:03d}" for i in range(symbols)], dtype=object)
    return (
        names[rng.integers(0, symbols, count)],
        np.round(100 + rng.standard_normal(count).cumsum() * 0.01, 4),
        np.round(rng.random(count) * 100, 2),
        START_MS + np.sort(rng.integers(0, DAY_MS, count)),
    )


def best_rate(count: int, run: Callable[[], Optional[float]], repeat: int) -> float:
    """count / the best time of ``repeat`` runs (a run may time its own measured part and return it)."""
    best = float("inf")
    for _ in range(repeat):
        gc.collect()
        started = time.perf_counter()
        measured = run()
        best = min(best, time.perf_counter() - started if measured is None else measured)
    return count / best


def pandas_ohlc(symbols, prices, volumes, stamps) -> None:
    frame = pd.DataFrame({"symbol": symbols, "price": prices, "volume": volumes})
    frame.index = pd.to_datetime(stamps, unit="ms")
    for interval in INTERVALS:
        frame.groupby("symbol").resample(f"{interval}ms").agg({"price": "ohlc", "volume": "sum"})


def per_tick(cls, lists) -> Callable[[], None]:
    def run() -> None:
        aggregator = cls(INTERVALS)
        update = aggregator.update_tick
        for symbol, price, volume, stamp in zip(*lists):
            update(symbol, price, volume, stamp)
        aggregator.tick_count  # the Python core aggregates what it buffered

    return run


def arrays(cls, ticks) -> Callable[[], None]:
    def run() -> None:
        cls(INTERVALS).update_arrays(*ticks)

    return run


def loop_only(lists) -> Callable[[], None]:
    def run() -> None:
        for symbol, price, volume, stamp in zip(*lists):
            pass

    return run


def fill_stream(client, ticks, count: int) -> None:
    """XADD the first ``count`` ticks to "ticks", ids from their timestamps (a sequence for equal ones)."""
    symbols, prices, volumes, stamps = (column[:count] for column in ticks)
    pipe = client.pipeline(transaction=False)
    previous, sequence = -1, 0
    for symbol, price, volume, stamp in zip(symbols.tolist(), prices.tolist(), volumes.tolist(), stamps.tolist()):
        sequence = sequence + 1 if stamp == previous else 0
        previous = stamp
        pipe.xadd("ticks", {"symbol": symbol, "price": repr(price), "volume": repr(volume)}, id=f"{stamp}-{sequence}")
        if len(pipe) >= 5000:
            pipe.execute()
    pipe.execute()


def stream_replies(ticks, count: int) -> Tuple[list, int]:
    """XREADGROUP replies (RESP2, bytes, hiredis) for the first ``count`` ticks, from a private server."""
    with tempfile.TemporaryDirectory() as home, EmbeddedServer(home) as server:
        client = redis.Redis.from_url(server.url)
        fill_stream(client, ticks, count)
        client.xgroup_create("ticks", "ohlc", id="0")
        replies = []
        while True:
            reply = client.xreadgroup("ohlc", "bench", {"ticks": ">"}, count=1000)
            if not reply:
                break
            replies.append(reply)
        client.close()
    return replies, sum(len(r[0][1]) for r in replies)


def consumer_rates(ticks, count: int, repeat: int) -> float:
    """Ticks/s of a FastOHLCConsumer (COUNT 1000) over ``count`` ticks already in the stream, best of ``repeat``."""

    async def once(url: str, run: int) -> float:
        async with RedisConnection(url=url) as connection:
            consumer = FastOHLCConsumer(
                "ticks",
                f"bars{run}",
                intervals=INTERVALS,
                group=f"ohlc{run}",
                connection=connection,
                flush_every=3600,
                grace_ms=0,
                consumer_config=ConsumerConfig(count=1000, block_ms=50, start_id="0"),
            )
            started = time.perf_counter()
            await consumer.start()
            while consumer.stats.processed < count:
                await asyncio.sleep(0.0005)
            elapsed = time.perf_counter() - started
            await consumer.stop()
            return elapsed

    with tempfile.TemporaryDirectory() as home, EmbeddedServer(home) as server:
        client = redis.Redis.from_url(server.url)
        fill_stream(client, ticks, count)
        client.close()
        best = float("inf")
        for run in range(repeat):
            gc.collect()
            best = min(best, asyncio.run(once(server.url, run)))
    return count / best


def process_batches(cls, replies) -> Callable[[], None]:
    def run() -> None:
        aggregator = cls(INTERVALS)
        for reply in replies:
            aggregator.process_stream_batch(reply)
        aggregator.tick_count

    return run


def ohlc_table(args) -> List[tuple]:
    rows = []
    implementations = [("compiled", CythonFastOHLC)] if CythonFastOHLC is not None else []
    implementations.append(("Python", PythonFastOHLC))
    for symbols in (1, 100):
        ticks = make_ticks(args.ticks, symbols)
        lists = tuple(column.tolist() for column in ticks)
        pandas_rate = best_rate(args.ticks, lambda: pandas_ohlc(*ticks), args.repeat)
        rows.append((symbols, "pandas groupby+resample().agg", args.ticks, pandas_rate, pandas_rate))
        rows.append(
            (
                symbols,
                "  (Python loop over the ticks alone)",
                args.ticks,
                best_rate(args.ticks, loop_only(lists), args.repeat),
                pandas_rate,
            )
        )
        for label, cls in implementations:
            rows.append(
                (
                    symbols,
                    f"update_tick, {label}",
                    args.ticks,
                    best_rate(args.ticks, per_tick(cls, lists), args.repeat),
                    pandas_rate,
                )
            )
        for label, cls in implementations:
            rows.append(
                (
                    symbols,
                    f"update_arrays, {label}",
                    args.ticks,
                    best_rate(args.ticks, arrays(cls, ticks), args.repeat),
                    pandas_rate,
                )
            )
        replies, count = stream_replies(ticks, args.stream_ticks)
        for label, cls in implementations:
            rows.append(
                (
                    symbols,
                    f"process_stream_batch, {label}",
                    count,
                    best_rate(count, process_batches(cls, replies), args.repeat),
                    pandas_rate,
                )
            )
        rows.append(
            (
                symbols,
                "FastOHLCConsumer end to end, COUNT 1000",
                count,
                consumer_rates(ticks, count, args.repeat),
                pandas_rate,
            )
        )
        del lists, replies
    return rows


def buffer_table(args) -> List[tuple]:
    held = args.rows
    stamps = START_MS + np.arange(held + 2 * held, dtype=np.int64)
    prefill = pd.DataFrame({"timestamp_ms": stamps[:held], "price": np.linspace(1, 2, held), "symbol": ["AAPL"] * held})
    frame_rows = min(held, 20_000)  # building 1-row DataFrames is slow in itself: done before timing
    as_frames = [
        pd.DataFrame({"timestamp_ms": [t], "price": [1.5], "symbol": ["AAPL"]})
        for t in stamps[held : held + frame_rows].tolist()
    ]
    as_dicts = [{"timestamp_ms": t, "price": 1.5, "symbol": "AAPL"} for t in stamps[held : held + held].tolist()]

    def ours(rows_in) -> Callable[[], float]:
        def run() -> float:
            buffer = TimeSeriesBuffer(max_age_seconds=1e9, max_rows=held)
            buffer.append(prefill)  # not timed: the buffer starts full
            started = time.perf_counter()
            for row in rows_in:
                buffer.append(row)
            elapsed = time.perf_counter() - started
            assert len(buffer) == held
            return elapsed

        return run

    naive_rows = as_frames[: max(200, frame_rows // 50)]  # it is slow: fewer rows

    def naive() -> None:
        frame = prefill
        for row in naive_rows:
            frame = pd.concat([frame, row], ignore_index=True).iloc[-held:]

    return [
        (
            held,
            "naive: pd.concat the frame + row, keep the last rows",
            len(naive_rows),
            best_rate(len(naive_rows), naive, args.repeat),
        ),
        (
            held,
            "TimeSeriesBuffer.append(1-row DataFrame)",
            frame_rows,
            best_rate(frame_rows, ours(as_frames), args.repeat),
        ),
        (
            held,
            "TimeSeriesBuffer.append(dict row)",
            len(as_dicts),
            best_rate(len(as_dicts), ours(as_dicts), args.repeat),
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ticks", type=int, default=5_000_000, help="ticks per OHLC case (default 5,000,000)")
    parser.add_argument(
        "--stream-ticks",
        type=int,
        default=200_000,
        help="ticks read back from a real server for process_stream_batch (default 200,000)",
    )
    parser.add_argument("--rows", type=int, default=100_000, help="rows the TimeSeriesBuffer holds (default 100,000)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure; the best is shown (default 3)")
    args = parser.parse_args()
    args.stream_ticks = min(args.stream_ticks, args.ticks)

    print(
        f"OHLC: intervals {[f'{i // 60_000}m' for i in INTERVALS]}, best of {args.repeat}; "
        f"compiled core {'built' if CythonFastOHLC is not None else 'NOT built'}"
    )
    print(f"{'symbols':>7}  {'path':<40} {'ticks':>10} {'ticks/s':>12} {'vs pandas':>10}")
    for symbols, path, count, rate, pandas_rate in ohlc_table(args):
        print(f"{symbols:>7}  {path:<40} {count:>10,} {rate:>12,.0f} {rate / pandas_rate:>9.2f}x", flush=True)

    print(f"\nTimeSeriesBuffer: single-row appends into a buffer holding {args.rows:,} rows")
    print(f"{'held':>7}  {'path':<52} {'rows':>8} {'rows/s':>12} {'vs naive':>9}")
    table = buffer_table(args)
    naive_rate = table[0][3]
    for held, path, count, rate in table:
        print(f"{held:>7,}  {path:<52} {count:>8,} {rate:>12,.0f} {rate / naive_rate:>8.0f}x", flush=True)


if __name__ == "__main__":
    main()
