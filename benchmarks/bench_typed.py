"""Typed messages: what decoding into a model costs per message, against the untyped path, in one run.

    python benchmarks/bench_typed.py [--entries 100000] [--rounds 5] [--consume 50000]

Part 1 (decode only, no server): the same tick-like entries, as a consumer
receives them (bytes field names and values: symbol, price, qty, side,
meta as JSON, ts), are handed to each variant's handler through the path an
agent uses (``received_messages`` + the wrapper ``typed_handler`` builds):

- untyped:         ``record.message`` (the str -> str decode every untyped handler does)
- untyped+convert: ``record.message`` then float/int/json.loads by hand, what handlers
                   did before typed messages (the fair baseline for "numbers as numbers")
- pydantic / msgspec / dataclass: ``async def handle(tick: Tick)`` with that model kind

Each variant's best of --rounds, in microseconds per message, and the ratio
to both untyped baselines. Rounds interleave the variants so drift hits all.

Part 2 (--consume N, 0 to skip): end to end through a real agent on a
private server, N entries drained by a fresh group per variant (untyped vs
each typed kind), msgs/s and the ratio to untyped.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import statistics
import tempfile
import time
from typing import Dict, List, Optional

import msgspec
import orjson
import pydantic

from streammachine import App, ConsumerConfig, Message
from streammachine.embedded import EmbeddedServer
from streammachine.message import received_messages
from streammachine.typed import typed_handler

SYMBOLS = ("AAPL", "MSFT", "GOOG", "AMZN", "NVDA", "TSLA", "META", "NFLX")


class PTick(pydantic.BaseModel):
    symbol: str
    price: float
    qty: int
    side: str
    meta: Dict[str, str]
    ts: float
    note: Optional[str] = None


class MTick(msgspec.Struct):
    symbol: str
    price: float
    qty: int
    side: str
    meta: Dict[str, str]
    ts: float
    note: Optional[str] = None


@dataclasses.dataclass
class DTick:
    symbol: str
    price: float
    qty: int
    side: str
    meta: Dict[str, str]
    ts: float
    note: Optional[str] = None


def record(i: int) -> dict:
    return {
        "symbol": SYMBOLS[i % len(SYMBOLS)],
        "price": f"{100 + (i % 997) * 0.01:.2f}",
        "qty": str(1 + i % 500),
        "side": "buy" if i % 2 else "sell",
        "meta": orjson.dumps({"venue": "X", "src": "feed"}).decode(),
        "ts": str(1_700_000_000.0 + i / 1000),
    }


def entries(n: int) -> list:
    return [
        (f"{1_700_000_000_000 + i}-0".encode(), {k.encode(): v.encode() for k, v in record(i).items()})
        for i in range(n)
    ]


def untyped(record: Message):
    return record.message


def untyped_convert(record: Message):
    m = record.message
    return (m["symbol"], float(m["price"]), int(m["qty"]), m["side"], orjson.loads(m["meta"]), float(m["ts"]))


def on_model(tick):
    return tick


def variants() -> Dict[str, object]:
    out: Dict[str, object] = {"untyped": untyped, "untyped+convert": untyped_convert}
    for label, model in (("pydantic", PTick), ("msgspec", MTick), ("dataclass", DTick)):

        def handle(tick: model):  # type: ignore[valid-type]
            return tick

        handle.__annotations__ = {"tick": model}
        out[label] = typed_handler(handle, is_async=False, batch=False, name=label)
    return out


def decode_round(handler, data: list) -> float:
    started = time.perf_counter()
    for message in received_messages("ticks", "c", 0.0, data):
        handler(message)
    return (time.perf_counter() - started) / len(data) * 1e6


def part_one(n: int, rounds: int) -> Dict[str, float]:
    data = entries(n)
    handlers = variants()
    for handler in handlers.values():  # warm caches (codecs, validators) outside the timing
        decode_round(handler, data[:1000])
    times: Dict[str, List[float]] = {name: [] for name in handlers}
    names = list(handlers)
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            times[name].append(decode_round(handlers[name], data))
    best = {name: min(t) for name, t in times.items()}
    print(f"\nDecode only: {n} entries, best of {rounds} rounds (median in brackets)\n")
    print("| variant | us/msg | x untyped | x untyped+convert |")
    print("|---|--:|--:|--:|")
    for name in names:
        print(
            f"| {name} | {best[name]:.2f} ({statistics.median(times[name]):.2f}) | "
            f"{best[name] / best['untyped']:.2f} | {best[name] / best['untyped+convert']:.2f} |"
        )
    return best


async def drain(url: str, group: str, handler, n: int) -> float:
    app = App(f"bench-{group}", redis_url=url, consumer_config=ConsumerConfig(count=1000, block_ms=50, start_id="0"))
    done = asyncio.Event()
    seen = 0

    async def count(arg, *_):
        nonlocal seen
        seen += 1
        if seen == n:
            done.set()

    if handler is None:

        async def agent(record: Message):
            record.message  # what an untyped handler touches first
            await count(record)
    else:
        agent = handler(count)
    app.agent("bench:ticks", group=group, name=group)(agent)
    await app.startup()
    started = time.perf_counter()
    await asyncio.wait_for(done.wait(), 600)
    elapsed = time.perf_counter() - started
    await app.shutdown()
    return n / elapsed


def typed_agent(model):
    def build(count):
        async def agent(tick: model):  # type: ignore[valid-type]
            await count(tick)

        agent.__annotations__ = {"tick": model}
        return agent

    return build


async def part_two(n: int) -> None:
    with EmbeddedServer(tempfile.mkdtemp(), appendonly=False) as server:
        app = App("loader", redis_url=server.url)
        for start in range(0, n, 5000):
            await app.send_batch("bench:ticks", [record(i) for i in range(start, min(n, start + 5000))])
        await app.shutdown()
        results = {}
        for label, handler in (
            ("untyped", None),
            ("pydantic", typed_agent(PTick)),
            ("msgspec", typed_agent(MTick)),
            ("dataclass", typed_agent(DTick)),
        ):
            results[label] = await drain(server.url, label, handler, n)
    print(f"\nEnd to end: an agent drains {n} entries (COUNT 1000), one fresh group per variant\n")
    print("| variant | msgs/s | x untyped |")
    print("|---|--:|--:|")
    for label, rate in results.items():
        print(f"| {label} | {rate:,.0f} | {rate / results['untyped']:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--consume", type=int, default=50_000, help="entries for the end-to-end part (0: skip)")
    args = parser.parse_args()
    part_one(args.entries, args.rounds)
    if args.consume:
        asyncio.run(part_two(args.consume))


if __name__ == "__main__":
    main()
