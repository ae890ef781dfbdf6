"""Dead-letter replay (``replay_dead_letters``) against a hand-written redis-py replay, in one run.

    python benchmarks/bench_dlq.py [--entries 20000] [--rounds 3]

One private server; each round loads ``--entries`` dead letters (as an agent
writes them) into a fresh dead-letter stream and replays all of them:

- raw:  redis.asyncio, XRANGE 200 at a time, then one MULTI/EXEC with the 200
        XADDs of the original fields and the XDEL (atomic, but two racing
        replays would both send an entry);
- core: ``streammachine.redis.deadletters.replay_dead_letters`` (a Lua script
        per 200 that moves an entry only if it is still there).

Reported: best-round entries/s of each and the ratio core / raw; the variants
alternate round by round so drift hits both alike.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time

import redis.asyncio as aioredis

from streammachine.redis import deadletters as dlq
from streammachine.testing import EmbeddedServer


async def load(client: aioredis.Redis, stream: str, entries: int) -> None:
    await client.delete(stream, stream + ":dead")
    for start in range(0, entries, 5000):
        pipe = client.pipeline(transaction=False)
        for i in range(start, min(entries, start + 5000)):
            fields = {"symbol": "AAPL", "price": f"{100 + i % 97:.2f}", "size": str(i % 500)}
            record = dlq.dead_letter_record(
                fields, stream=stream, group="g", entry_id=f"{i + 1}-0", agent="a", error="ValueError: x", deliveries=3
            )
            pipe.xadd(stream + ":dead", record)
        await pipe.execute()


async def raw(client: aioredis.Redis, stream: str) -> int:
    dead, moved, start = stream + ":dead", 0, "-"
    while True:
        rows = await client.xrange(dead, min=start, count=200)
        if not rows:
            return moved
        pipe = client.pipeline(transaction=True)
        for _, fields in rows:
            pipe.xadd(stream, {k: v for k, v in fields.items() if not k.startswith(b"_dlq_")})
        pipe.xdel(dead, *[entry for entry, _ in rows])
        await pipe.execute()
        moved += len(rows)
        start = b"(" + rows[-1][0]


async def core(client: aioredis.Redis, stream: str) -> int:
    return (await dlq.replay_dead_letters(client, stream, maxlen=None, max_age=None)).count


async def main(entries: int, rounds: int) -> None:
    with EmbeddedServer(tempfile.mkdtemp(), appendonly=False) as server:
        client = aioredis.Redis.from_url(server.url)
        best = {"raw": 0.0, "core": 0.0}
        for _ in range(rounds):
            for name, replay in (("raw", raw), ("core", core)):
                await load(client, f"bench:{name}", entries)
                began = time.perf_counter()
                moved = await replay(client, f"bench:{name}")
                rate = moved / (time.perf_counter() - began)
                assert moved == entries and await client.xlen(f"bench:{name}") == entries
                best[name] = max(best[name], rate)
        await client.aclose()
    print(f"entries {entries}, best of {rounds} rounds")
    print(f"raw  (XRANGE + MULTI XADD.. XDEL): {best['raw']:>10,.0f} entries/s")
    print(
        f"core (Lua, checked per entry):     {best['core']:>10,.0f} entries/s  ({best['core'] / best['raw']:.2f} x raw)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=3)
    options = parser.parse_args()
    asyncio.run(main(options.entries, options.rounds))
