"""End to end: stream -> window -> output stream, a window stage against a hand-written redis-py + pandas one.

    python benchmarks/bench_window_stage.py [--entries 300000] [--keys 100] [--count 1000] [--rounds 3]

One private server (appendonly=no) holds one pre-loaded stream of trades:
--keys symbols, explicit ids 3 ms apart (event time = the id's ms), a
price and a quantity. Each variant drains it through a fresh consumer group
into a fresh output stream: VWAP, volume and trade count per symbol per
minute, a row per closed minute. Variants are interleaved round by round.

- pandas:  redis.asyncio; XREADGROUP COUNT n; the read into a DataFrame;
           groupby(symbol, minute) sums merged into a dict of open minutes;
           the minutes a symbol's clock has passed written with XADD and the
           read acknowledged, in one pipeline (not atomic; the open minutes
           only in memory: a crash loses them). The usual hand-written job.
- window:  ``@app.agent(stream, window=Window.tumbling(60_000, key="symbol")
           .agg(n=Count(), volume=Sum("qty"), vwap=VWAP("price", "qty")),
           output=out)`` returning the rows: the rows, the window's state
           and the XACK in one atomic commit per read (compiled core).
- window-py: the same on the pure-Python core (STREAMMACHINE_PURE_PYTHON=1).
- read+ack: no work at all, redis.asyncio XREADGROUP COUNT n then XACK of the read, one round trip each
           (--ceiling): what this machine's client and server do for the reading and acknowledging alone.

Both produce the same rows (checked). Reported: best-round entries/s,
client CPU us/entry, ratios against pandas. Everything in one process,
under uvloop.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from typing import Callable, Dict, List

import numpy as np
import pandas as pd
import redis.asyncio as aioredis

from streammachine import App, ConsumerConfig
from streammachine.testing import EmbeddedServer
from streammachine.windows import VWAP, Count, Sum, Window

SOURCE = "bench:window:in"
START_MS = 1_700_000_000_000 - 1_700_000_000_000 % 60_000
STEP_MS = 3
MINUTE = 60_000
WINDOW = Window.tumbling(MINUTE, key="symbol").agg(n=Count(), volume=Sum("qty"), vwap=VWAP("price", "qty"))


async def preload(client: aioredis.Redis, entries: int, keys: int) -> None:
    rng = np.random.default_rng(1)
    symbols = [f"S{i:03d}" for i in range(keys)]
    picks = rng.integers(0, keys, entries)
    prices = np.round(100 + rng.standard_normal(entries).cumsum() * 0.01, 2)
    qtys = rng.integers(1, 500, entries)
    await client.delete(SOURCE)
    for start in range(0, entries, 5000):
        pipe = client.pipeline(transaction=False)
        for i in range(start, min(entries, start + 5000)):
            fields = {"symbol": symbols[picks[i]], "price": f"{prices[i]:.2f}", "qty": int(qtys[i])}
            pipe.xadd(SOURCE, fields, id=f"{START_MS + i * STEP_MS}-0")
        await pipe.execute()


async def fresh(client: aioredis.Redis, group: str, out: str) -> None:
    await client.delete(out)
    for key in await client.keys("streammachine:table:*"):
        await client.delete(key)
    try:
        await client.xgroup_destroy(SOURCE, group)
    except Exception:
        pass
    await client.xgroup_create(SOURCE, group, id="0")


async def pandas_stage(url: str, entries: int, count: int, out: str) -> tuple:
    client = aioredis.Redis.from_url(url)
    group = "pandas"
    await fresh(client, group, out)
    open_minutes: Dict[tuple, list] = {}  # (symbol, minute) -> [n, volume, price*qty]
    clocks: Dict[str, int] = {}
    started = time.perf_counter(), time.process_time()
    done = 0
    while done < entries:
        reply = await client.xreadgroup(group, "c", {SOURCE: ">"}, count=count)
        batch = reply[0][1]
        ids = [e[0] for e in batch]
        frame = pd.DataFrame(
            {
                "ms": [int(i.split(b"-")[0]) for i in ids],
                "symbol": [f[b"symbol"].decode() for _, f in batch],
                "price": np.array([f[b"price"] for _, f in batch], dtype=float),
                "qty": np.array([f[b"qty"] for _, f in batch], dtype=float),
            }
        )
        frame["minute"] = frame["ms"] // MINUTE * MINUTE
        frame["pq"] = frame["price"] * frame["qty"]
        sums = frame.groupby(["symbol", "minute"], sort=False).agg(
            n=("qty", "size"), volume=("qty", "sum"), pq=("pq", "sum")
        )
        for (symbol, minute), (n, volume, pq) in zip(sums.index, sums.itertuples(index=False)):
            slot = open_minutes.setdefault((symbol, minute), [0, 0.0, 0.0])
            slot[0] += n
            slot[1] += volume
            slot[2] += pq
        for symbol, ms in frame.groupby("symbol", sort=False)["ms"].max().items():
            clocks[symbol] = max(clocks.get(symbol, 0), ms)
        pipe = client.pipeline(transaction=False)
        for key in [k for k in open_minutes if k[1] + MINUTE <= clocks[k[0]]]:
            n, volume, pq = open_minutes.pop(key)
            row = {"key": key[0], "start": key[1], "end": key[1] + MINUTE, "n": n, "volume": volume}
            pipe.xadd(out, {**row, "vwap": pq / volume})
        pipe.xack(SOURCE, group, *ids)
        await pipe.execute()
        done += len(batch)
    elapsed = time.perf_counter() - started[0], time.process_time() - started[1]
    await client.aclose()
    return elapsed


async def read_ack(url: str, entries: int, count: int, out: str) -> tuple:
    client = aioredis.Redis.from_url(url)
    group = "read-ack"
    await fresh(client, group, out)
    started = time.perf_counter(), time.process_time()
    done = 0
    while done < entries:
        batch = (await client.xreadgroup(group, "c", {SOURCE: ">"}, count=count))[0][1]
        await client.xack(SOURCE, group, *[entry_id for entry_id, _ in batch])
        done += len(batch)
    elapsed = time.perf_counter() - started[0], time.process_time() - started[1]
    await client.aclose()
    return elapsed


async def window_stage(url: str, entries: int, count: int, out: str, pure: bool) -> tuple:
    client = aioredis.Redis.from_url(url)
    group = "window-py" if pure else "window"
    await fresh(client, group, out)
    if pure:
        os.environ["STREAMMACHINE_PURE_PYTHON"] = "1"
    app = App(f"bench-{group}", redis_url=url, consumer_config=ConsumerConfig(count=count, start_id="0"))

    @app.agent(SOURCE, group=group, output=out, window=WINDOW, name="vwap")
    def vwap(rows):
        return rows

    os.environ.pop("STREAMMACHINE_PURE_PYTHON", None)
    started = time.perf_counter(), time.process_time()
    await app.startup()
    while True:  # done when the group has nothing pending and has read the last entry (all committed)
        info = next(g for g in await client.xinfo_groups(SOURCE) if g["name"].decode() == group)
        if info["pending"] == 0 and info["entries-read"] == entries:
            break
        await asyncio.sleep(0.002)
    elapsed = time.perf_counter() - started[0], time.process_time() - started[1]
    await app.shutdown()
    await client.aclose()
    return elapsed


async def same_rows(url: str, outs: List[str]) -> int:
    client = aioredis.Redis.from_url(url)
    tables = []
    for out in outs:
        rows = [{k.decode(): v.decode() for k, v in f.items()} for _, f in await client.xrange(out)]
        frame = pd.DataFrame(rows)[["key", "start", "n", "volume", "vwap"]].astype(
            {"start": int, "n": int, "volume": float, "vwap": float}
        )
        tables.append(frame.sort_values(["key", "start"]).reset_index(drop=True))
    await client.aclose()
    for other in tables[1:]:
        pd.testing.assert_frame_equal(tables[0], other, check_exact=False, rtol=1e-9)
    return len(tables[0])


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--entries", type=int, default=300_000)
    parser.add_argument("--keys", type=int, default=100)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--python", action="store_true", help="also the pure-Python core")
    parser.add_argument("--ceiling", action="store_true", help="also XREADGROUP + XACK alone (no work)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, EmbeddedServer(tmp, appendonly=False) as server:
        client = aioredis.Redis.from_url(server.url)
        await preload(client, args.entries, args.keys)
        await client.aclose()
        n, c = args.entries, args.count
        variants: Dict[str, Callable] = {
            "pandas": lambda: pandas_stage(server.url, n, c, "o:pandas"),
            "window": lambda: window_stage(server.url, n, c, "o:window", pure=False),
        }
        if args.python:
            variants["window-py"] = lambda: window_stage(server.url, n, c, "o:window-py", pure=True)
        if args.ceiling:
            variants["read+ack"] = lambda: read_ack(server.url, n, c, "o:read-ack")
        results: Dict[str, List[tuple]] = {name: [] for name in variants}
        names = list(variants)
        for round_no in range(args.rounds):
            for name in names[round_no % len(names) :] + names[: round_no % len(names)]:
                results[name].append(await variants[name]())
        rows = await same_rows(server.url, [f"o:{name}" for name in names if name != "read+ack"])
    best = {name: min(runs) for name, runs in results.items()}
    base_wall, base_cpu = best["pandas"]
    print(
        f"\n{n} entries, {args.keys} keys, tumbling 1 min VWAP/volume/count, {rows} rows out (the same from each), "
        f"COUNT {c}, best of {args.rounds} rounds (median entries/s in brackets)\n"
    )
    print("| variant | entries/s | x pandas | client CPU us/entry | x pandas (CPU) | crash-safe |")
    print("|---|--:|--:|--:|--:|---|")
    safe = {"pandas": "no", "window": "yes", "window-py": "yes", "read+ack": "(no work)"}
    for name, (wall, cpu) in best.items():
        median = statistics.median(n / w for w, _ in results[name])
        print(
            f"| {name} | {n / wall:,.0f} ({median:,.0f}) | {base_wall / wall:.2f} | {cpu / n * 1e6:.2f} | "
            f"{base_cpu / cpu:.2f} | {safe[name]} |"
        )


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.run(main())
    except ImportError:
        asyncio.run(main())
