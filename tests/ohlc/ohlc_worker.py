"""A FastOHLCConsumer in a process of its own, for the crash tests (tests/test_ohlc_crash.py).

    python tests/ohlc_worker.py REDIS_URL [--crash-before N | --crash-after N]

Consumes "ticks" (group "ohlc") into "bars_1s", "bars_5s", "bars_1m" until
SIGTERM (a clean stop). ``--crash-before N`` / ``--crash-after N`` SIGKILL
the process itself just before its N-th commit (candles + snapshot + acks)
is sent / just after the N-th commit succeeded (before the next read).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal

from streammachine import ConsumerConfig, RedisConnection
from streammachine.engine.commit import CommitPlan
from streammachine.engine.stage import StageConsumer
from streammachine.ohlc import FastOHLCConsumer

INTERVALS = [1000, 5000, 60_000]
CONFIG = ConsumerConfig(count=37, block_ms=50, start_id="0", claim_idle_ms=200, retry_delay_ms=20, max_deliveries=1000)


def arm(before: int, after: int) -> None:
    """SIGKILL this process around the N-th commit: a real crash at a chosen point."""
    take, send, outcome = StageConsumer._take_pending, StageConsumer._send, CommitPlan.outcome
    sent, done = [0], [0]

    def count_sent() -> None:
        sent[0] += 1
        if sent[0] == before:
            os.kill(os.getpid(), signal.SIGKILL)

    def crashing_take(self):
        commands, token = take(self)
        if token[0] is not None:  # a commit rides with this read
            count_sent()
        return commands, token

    async def crashing_send(self, plan):
        count_sent()
        return await send(self, plan)

    def crashing_outcome(self, reply):
        result = outcome(self, reply)
        if result.kind == "ok":
            done[0] += 1
            if done[0] == after:
                os.kill(os.getpid(), signal.SIGKILL)
        return result

    StageConsumer._take_pending, StageConsumer._send, CommitPlan.outcome = (
        crashing_take,
        crashing_send,
        crashing_outcome,
    )


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
