"""Quickstart: a producer timer, an agent that bills orders, and a stats line.

    streammachine run examples/quickstart.py                # Ctrl-C stops it cleanly
    streammachine run examples/quickstart.py --workers 2 --metrics-port 9100
    python examples/quickstart.py                           # the same app via app.start()

With no Redis configured (REDIS_URL unset, nothing on localhost:6379) it uses
StreamMachine's embedded Valkey server, started on first use.
"""

import random
import time

from streammachine import App, Message

PRICES = {"book": 12.5, "pen": 1.2, "lamp": 30.0}

app = App(name="quickstart", stream_maxlen=10_000)


@app.timer(0.5)
async def produce_orders():
    """Two orders a second into the 'quickstart:orders' stream."""
    await app.send(
        "quickstart:orders", {"item": random.choice(list(PRICES)), "qty": random.randint(1, 5), "sent": time.time()}
    )


@app.agent("quickstart:orders", group="billing")
async def bill(record: Message):
    """Price each order and emit an invoice."""
    order = record.message
    total = PRICES[order["item"]] * int(order["qty"])
    await app.send("quickstart:invoices", {"order_id": record.key, "item": order["item"], "total": total})


@app.timer(5)
async def report():
    """What the agent did so far (this process's counters)."""
    stats = app.stats("bill")
    average = stats.handler_seconds / stats.processed * 1000 if stats.processed else 0.0
    print(f"quickstart: {stats.processed} orders billed, {stats.failed} failed, {average:.2f} ms per order", flush=True)


if __name__ == "__main__":
    app.start()
