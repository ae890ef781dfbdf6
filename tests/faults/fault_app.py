"""A headless app for the fault suite, run as a subprocess: ``python fault_app.py``.

Settings come from the environment as for any headless run (REDIS_URL,
STREAMMACHINE_*); FAULT_STREAM, FAULT_LEDGER and FAULT_SLOW_MS say what to
consume, where to record handled seqs and how long each handler takes.
"""

import asyncio
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from faultkit import Ledger, seq_of

from streammachine import App

app = App("faultapp")
ledger = Ledger(os.environ["FAULT_LEDGER"])
slow = float(os.environ.get("FAULT_SLOW_MS", "0")) / 1000.0


@app.agent(os.environ["FAULT_STREAM"], group="faults", concurrency=int(os.environ.get("FAULT_CONCURRENCY", "1")))
async def work(message):
    if slow:
        await asyncio.sleep(slow)
    ledger.record(seq_of(message))


@app.on_startup
async def ready():
    print("READY", flush=True)


if __name__ == "__main__":
    app.start()
