"""A headless stage for the fault suite: ``python -m streammachine run stage_app.py``.

Settings come from the environment as for any headless run (REDIS_URL,
STREAMMACHINE_*). STAGE_STREAM is the input (its output is
``<stream>:out``), STAGE_TABLE the table, STAGE_CONCURRENCY and
STAGE_PROCESSES how many consumers and forked workers the agent gets,
STAGE_SLOW_MS how long each handler takes. For each input ``{"seq": n}`` it
outputs ``{"seq": n}`` and adds to the table: ``r<n % 10>`` += 1, ``sum`` += n,
all committed with the ack of the entry. An empty STAGE_TABLE makes an
outputs-only stage.

STAGE_WINDOW=1 makes it a window stage instead (``WINDOW``): tumbling windows of
100 over the event time ``seq``, a row ``{"key", "start", "end", "n", "total"}``
per closed window to the output, the window's state committed with the ack.
"""

import asyncio
import os

from streammachine import App
from streammachine.windows import Count, Sum, Window

STREAM = os.environ.get("STAGE_STREAM", "orders")
app = App("stageapp")
TABLE = os.environ.get("STAGE_TABLE", "totals")
totals = app.table(TABLE, default=0) if TABLE else None
slow = float(os.environ.get("STAGE_SLOW_MS", "0")) / 1000.0


WINDOW = Window.tumbling(100, time="seq", grace_ms=1000).agg(n=Count(), total=Sum("seq"))
WINDOWED = os.environ.get("STAGE_WINDOW") == "1"


def window_rows(rows):
    return rows


if WINDOWED:
    app.agent(
        STREAM,
        group="stage",
        output=f"{STREAM}:out",
        window=WINDOW,
        concurrency=int(os.environ.get("STAGE_CONCURRENCY", "1")),
        name="stage",
        start_id="0",
    )(window_rows)


async def stage(message):
    seq = int(message.fields[b"seq"])
    if slow:
        await asyncio.sleep(slow)
    if totals is not None:
        totals[f"r{seq % 10}"] += 1
        totals["sum"] += seq
    return {"seq": seq}


if not WINDOWED:
    app.agent(
        STREAM,
        group="stage",
        output=f"{STREAM}:out",
        tables=[totals] if totals is not None else [],
        concurrency=int(os.environ.get("STAGE_CONCURRENCY", "1")),
        processes=int(os.environ.get("STAGE_PROCESSES", "0")) or None,
        name="stage",
        start_id="0",
    )(stage)


@app.on_startup
async def ready():
    print("READY", flush=True)


if __name__ == "__main__":
    app.start()
