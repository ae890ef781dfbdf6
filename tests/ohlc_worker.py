"""A FastOHLCConsumer in a process of its own, for the crash tests (tests/test_ohlc_crash.py).

    python tests/ohlc_worker.py REDIS_URL [--crash-before N | --crash-after N]

Consumes "ticks" (group "ohlc") into "bars_1s", "bars_5s", "bars_1m" until
SIGTERM (a clean stop). ``--crash-before N`` / ``--crash-after N`` SIGKILL
the process itself just before / just after its N-th write of candles and
checkpoint succeeded (after: before the ticks are acknowledged).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal

from streammachine import ConsumerConfig, RedisConnection
from streammachine.ohlc import FastOHLCConsumer
from streammachine.ohlc.checkpoint import CheckpointWriter

INTERVALS = [1000, 5000, 60_000]
CONFIG = ConsumerConfig(count=37, block_ms=50, start_id="0", claim_idle_ms=200, retry_delay_ms=20, max_deliveries=1000)


def arm(before: int, after: int) -> None:
    """SIGKILL this process around the N-th write: a real crash at a chosen point."""
    write, calls = CheckpointWriter.write, [0]

    async def crashing_write(self, client, candles, payload):
        calls[0] += 1
        if calls[0] == before:
            os.kill(os.getpid(), signal.SIGKILL)
        await write(self, client, candles, payload)
        if calls[0] == after:
            os.kill(os.getpid(), signal.SIGKILL)

    CheckpointWriter.write = crashing_write


async def main(url: str) -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with RedisConnection(url=url) as connection:
        consumer = FastOHLCConsumer(
            "ticks",
            "bars",
            intervals=INTERVALS,
            group="ohlc",
            connection=connection,
            flush_every=0.05,
            grace_ms=10**9,
            consumer_config=CONFIG,
        )
        await consumer.start()
        await stop.wait()
        await consumer.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--crash-before", type=int, default=0)
    parser.add_argument("--crash-after", type=int, default=0)
    args = parser.parse_args()
    arm(args.crash_before, args.crash_after)
    asyncio.run(main(args.url))
