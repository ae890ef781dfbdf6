"""A stage (read, transform, write to another stream) against hand-written redis-py stages, in one run.

    python benchmarks/bench_stage.py [--entries 30000] [--count 100] [--rounds 3]

One private server holds one pre-loaded stream of tick-like entries; every
variant drains it through a fresh consumer group into a fresh output stream,
one output per input (``price`` doubled), and the variants are interleaved
round by round so drift hits them all alike:

- raw:        redis.asyncio, XREADGROUP COUNT n, then ONE pipeline with the n
              XADDs and the XACK (not atomic: a crash between them duplicates);
- raw-multi:  the same pipeline as MULTI/EXEC (atomic);
- raw-table:  raw, plus an HINCRBY per entry in the same pipeline (not atomic);
- send:       ``@app.agent`` that calls ``await app.send(out, ...)`` per entry
              (what the reference's examples do);
- stage:      ``@app.agent(output=out)`` returning the record: outputs and
              XACK committed atomically, one commit per read;
- stage-table: ``stage`` plus ``table[symbol] += 1`` per entry (``tables=[t]``).

Reported: best-round msgs/s (median in brackets), client and server CPU us/msg (the server's from INFO CPU;
on a machine shared with other work the two CPU columns are steadier than msgs/s), the ratio against ``raw``, and each
StreamMachine variant against the hand-written stage it replaces (send: raw, stage: raw-multi, stage-table:
raw-table), by best and by median round.
Everything runs under uvloop, appendonly=no.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from typing import Callable, Dict, List

import redis.asyncio as aioredis

from streammachine import App, ConsumerConfig
from streammachine.testing import EmbeddedServer

SOURCE = "bench:stage:in"
SYMBOLS = ("AAPL", "MSFT", "GOOG", "AMZN", "NVDA", "TSLA", "META", "NFLX")


def tick(i: int) -> dict:
    return {"symbol": SYMBOLS[i % len(SYMBOLS)], "price": f"{100 + (i % 997) * 0.01:.2f}", "size": str(1 + i % 500)}


def transform(fields: Dict) -> dict:
    return {"symbol": fields["symbol"], "price2": float(fields["price"]) * 2}


async def server_cpu(client: aioredis.Redis) -> float:
    """CPU seconds the server used so far (user + system): the part of a stage's cost the client CPU misses."""
    info = await client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


async def preload(client: aioredis.Redis, entries: int) -> None:
    await client.delete(SOURCE)
    for start in range(0, entries, 5000):
        pipe = client.pipeline(transaction=False)
        for i in range(start, min(entries, start + 5000)):
            pipe.xadd(SOURCE, tick(i))
        await pipe.execute()


async def fresh(client: aioredis.Redis, group: str, out: str) -> None:
    await client.delete(out, "streammachine:table:bench")
    try:
        await client.xgroup_destroy(SOURCE, group)
    except Exception:
        pass
    await client.xgroup_create(SOURCE, group, id="0")


async def raw_stage(url: str, entries: int, count: int, out: str, *, transaction: bool, table: bool) -> tuple:
    client = aioredis.Redis.from_url(url)
    group = "raw"
    await fresh(client, group, out)
    started = time.perf_counter(), time.process_time(), await server_cpu(client)
    done = 0
    while done < entries:
        reply = await client.xreadgroup(group, "c", {SOURCE: ">"}, count=count)
        batch = reply[0][1]
        pipe = client.pipeline(transaction=transaction)
        for entry_id, fields in batch:
            fields = {k.decode(): v.decode() for k, v in fields.items()}
            pipe.xadd(out, transform(fields))
            if table:
                pipe.hincrby("streammachine:table:bench", fields["symbol"], 1)
        pipe.xack(SOURCE, group, *[e[0] for e in batch])
        await pipe.execute()
        done += len(batch)
    elapsed = (
        time.perf_counter() - started[0],
        time.process_time() - started[1],
        await server_cpu(client) - started[2],
    )
    assert await client.xlen(out) == entries
    await client.aclose()
    return elapsed


async def app_stage(url: str, entries: int, count: int, out: str, variant: str) -> tuple:
    client = aioredis.Redis.from_url(url)
    group = variant
    await fresh(client, group, out)
    app = App(f"bench-{variant}", redis_url=url, consumer_config=ConsumerConfig(count=count, start_id="0"))
    handled = 0
    finished = asyncio.Event()

    def tick_done() -> None:
        nonlocal handled
        handled += 1
        if handled == entries:
            finished.set()

    if variant == "send":

        @app.agent(SOURCE, group=group)
        async def send_stage(message):
            await app.send(out, transform(message.message))
            tick_done()

    elif variant == "stage":

        @app.agent(SOURCE, group=group, output=out)
        async def stage(message):
            tick_done()
            return transform(message.message)

    else:
        table = app.table("bench", default=0)

        @app.agent(SOURCE, group=group, output=out, tables=[table])
        async def stage_table(message):
            fields = message.message
            table[fields["symbol"]] += 1
            tick_done()
            return transform(fields)

    started = time.perf_counter(), time.process_time(), await server_cpu(client)
    await app.startup()
    await finished.wait()
    while await client.xlen(out) < entries:  # the last read's commit rides with the next read
        await asyncio.sleep(0.001)
    elapsed = (
        time.perf_counter() - started[0],
        time.process_time() - started[1],
        await server_cpu(client) - started[2],
    )
    await app.shutdown()
    await client.aclose()
    return elapsed


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--entries", type=int, default=30000)
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, EmbeddedServer(tmp, appendonly=False) as server:
        client = aioredis.Redis.from_url(server.url)
        await preload(client, args.entries)
        variants: Dict[str, Callable] = {
            "raw": lambda: raw_stage(server.url, args.entries, args.count, "o:raw", transaction=False, table=False),
            "raw-multi": lambda: raw_stage(
                server.url, args.entries, args.count, "o:multi", transaction=True, table=False
            ),
            "raw-table": lambda: raw_stage(
                server.url, args.entries, args.count, "o:rawt", transaction=False, table=True
            ),
            "send": lambda: app_stage(server.url, args.entries, args.count, "o:send", "send"),
            "stage": lambda: app_stage(server.url, args.entries, args.count, "o:stage", "stage"),
            "stage-table": lambda: app_stage(server.url, args.entries, args.count, "o:staget", "stage-table"),
        }
        results: Dict[str, List[tuple]] = {name: [] for name in variants}
        names = list(variants)
        for round_no in range(args.rounds):
            order = names[round_no % len(names) :] + names[: round_no % len(names)]
            for name in order:
                results[name].append(await variants[name]())
        await client.aclose()
    best = {name: min(runs) for name, runs in results.items()}
    base = args.entries / best["raw"][0]
    # each StreamMachine variant against the hand-written one it replaces (the goals: stage >= 1.2x the
    # atomic MULTI stage, stage-table >= 1.0x the table stage), by best and by median round
    against = {"send": "raw", "stage": "raw-multi", "stage-table": "raw-table"}
    goal = {"stage": ">= 1.2", "stage-table": ">= 1.0"}
    medians = {name: statistics.median(args.entries / run[0] for run in runs) for name, runs in results.items()}
    print(f"\n{args.entries} entries, COUNT {args.count}, best of {args.rounds} rounds (median msgs/s in brackets)\n")
    print(
        "| variant | msgs/s | x raw | vs | x vs (best, median) | goal | client CPU us/msg | server CPU us/msg | atomic |"
    )
    print("|---|--:|--:|---|--:|--:|--:|--:|---|")
    atomic = {"raw": "no", "raw-multi": "yes", "raw-table": "no", "send": "no", "stage": "yes", "stage-table": "yes"}
    for name, (wall, cpu, server) in best.items():
        rate = args.entries / wall
        versus = against.get(name)
        ratio = ""
        if versus:
            ratio = f"{rate / (args.entries / best[versus][0]):.2f}, {medians[name] / medians[versus]:.2f}"
        print(
            f"| {name} | {rate:,.0f} ({medians[name]:,.0f}) | {rate / base:.2f} | {versus or ''} | {ratio} | "
            f"{goal.get(name, '')} | {cpu / args.entries * 1e6:.1f} | {server / args.entries * 1e6:.1f} | {atomic[name]} |"
        )


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.run(main())
    except ImportError:
        asyncio.run(main())
