"""Typed agents on a real server: instances in, models sent, invalid entries dead-lettered at once, the catalog."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import threading
from typing import List

import msgspec
import pydantic

from streammachine import Message
from streammachine.redis.catalog import CATALOG_KEY, read_catalog, register_model
from tests.helpers import wait_until


class Trade(pydantic.BaseModel):
    symbol: str
    qty: int
    meta: dict = {}


class Tick(msgspec.Struct):
    symbol: str
    price: float


@dataclasses.dataclass
class Order:
    item: str
    qty: int


async def test_typed_agent_gets_instances_and_send_takes_models(app_factory):
    app = app_factory()
    got = []

    @app.agent("trades", group="g")
    async def book(trade: Trade, record: Message):
        got.append((trade, record.topic, record.key))

    await app.startup()
    first = await app.send("trades", Trade(symbol="AAPL", qty=2, meta={"src": "web"}))
    await app.send_batch("trades", [Trade(symbol="MSFT", qty=1), {"symbol": "IBM", "qty": "3"}])
    await wait_until(lambda: len(got) == 3, what="three trades")
    assert got[0] == (Trade(symbol="AAPL", qty=2, meta={"src": "web"}), "trades", first)
    assert [t.qty for t, _, _ in got] == [2, 1, 3]


async def test_invalid_entry_is_dead_lettered_at_once_with_the_validation_error(app_factory, sync_redis):
    app = app_factory()  # FAST: max_deliveries=3, retries after 50 ms
    good = []

    @app.agent("trades", group="g", name="book")
    async def book(trade: Trade):
        good.append(trade.symbol)

    await app.startup()
    await app.send_batch(
        "trades", [{"symbol": "A", "qty": 1}, {"symbol": "B", "qty": "lots"}, {"symbol": "C", "qty": 3}]
    )
    await wait_until(lambda: len(good) == 2 and app.stats("book").dead_lettered == 1, what="2 handled, 1 dead")
    stats = app.stats("book")
    assert stats.retried == 0, "a validation failure cannot succeed on a retry"
    assert good == ["A", "C"]
    (dead_id, dead), *rest = sync_redis.xrange("trades:dead")
    assert not rest
    assert dead["_dlq_deliveries"] == "1" and dead["qty"] == "lots" and dead["symbol"] == "B"
    assert (
        dead["_dlq_error"].startswith("InvalidMessage: ")
        and "'qty'" in dead["_dlq_error"]
        and "'lots'" in dead["_dlq_error"]
    )
    assert sync_redis.xpending("trades", "g")["pending"] == 0


async def test_skip_policy_still_skips_invalid_entries(app_factory, sync_redis):
    app = app_factory()

    @app.agent("orders", group="g", name="o", on_error="skip")
    async def handle(order: Order): ...

    await app.startup()
    await app.send("orders", {"item": "book"})  # qty missing
    await wait_until(lambda: app.stats("o").skipped == 1)
    assert sync_redis.xlen("orders:dead") == 0


async def test_typed_batch_agent_isolates_the_invalid_entry(app_factory, sync_redis):
    app = app_factory()
    batches: List[List[str]] = []

    @app.agent("ticks", group="g", batch=True, name="b")
    async def handle(ticks: List[Tick], records: List[Message]):
        assert len(ticks) == len(records)
        batches.append([t.symbol for t in ticks])

    await app.startup()
    await app.send_batch("ticks", [Tick("A", 1.0), {"symbol": "B", "price": "x"}, Tick("C", 2.5)])
    await wait_until(lambda: app.stats("b").dead_lettered == 1 and sum(map(len, batches)) == 2)
    assert sorted(s for b in batches for s in b) == ["A", "C"]
    assert sync_redis.xrange("ticks:dead")[0][1]["symbol"] == "B"


async def test_threaded_sync_typed_handler_runs_in_the_pool(app_factory):
    app = app_factory()
    seen = []

    @app.agent("orders", group="g", threaded=True)
    def handle(order: Order):
        seen.append((order, threading.current_thread() is threading.main_thread()))

    await app.startup()
    await app.send("orders", Order(item="pen", qty=5))
    await wait_until(lambda: seen)
    assert seen == [(Order(item="pen", qty=5), False)]


async def test_handler_annotated_message_still_gets_the_message(app_factory):
    """Regression: Message is a dataclass; a handler annotated with it must not be taken for a typed one."""
    app = app_factory()
    seen = []

    @app.agent("plain", group="g")
    async def handle(record: Message):
        seen.append(record.message)

    await app.startup()
    await app.send("plain", {"a": 1})
    await wait_until(lambda: seen)
    assert seen == [{"a": "1"}]


async def test_catalog_lists_the_models_of_running_agents(app_factory, redis_url):
    app = app_factory()

    @app.agent("trades", group="g", name="book")
    async def book(trade: Trade): ...

    @app.agent("trades", group="audit", name="audit")
    async def audit(record: Message): ...  # untyped: not in the catalog

    await app.startup()
    await register_model(app, "candles", Order, name="producer")
    entries = await read_catalog(app, "trades")
    assert [(e["model"], e["kind"], e["role"], e["agent"]) for e in entries] == [
        (f"{__name__}.Trade", "pydantic", "input", "book")
    ]
    assert entries[0]["schema"]["properties"]["qty"]["type"] == "integer"
    assert [f["name"] for f in entries[0]["fields"]] == ["symbol", "qty", "meta"]
    assert [e["role"] for e in await read_catalog(app, "candles")] == ["output"]
    client = await app.redis.get_client()
    assert await client.hlen(CATALOG_KEY) == 2

    info = subprocess.run(
        [sys.executable, "-m", "streammachine", "info", "trades", "--redis-url", redis_url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert info.returncode == 0, info.stderr
    assert f"model {__name__}.Trade (pydantic, input by agent book): symbol: a string, qty: an integer" in info.stdout
    as_json = subprocess.run(
        [sys.executable, "-m", "streammachine", "info", "trades", "--json", "--redis-url", redis_url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert json.loads(as_json.stdout)["models"][0]["schema"]["title"] == "Trade"


async def test_mcp_catalog_resource_returns_json_schemas(app_factory, redis_url):
    from mcp import Client

    from streammachine.mcp import build_server

    app = app_factory()

    @app.agent("orders", group="g", name="take")
    async def take(order: Order): ...

    await app.startup()
    server = build_server(redis_url=redis_url)
    try:
        async with Client(server) as client:
            text = (await client.read_resource("streammachine://catalog")).contents[0].text
    finally:
        await server.state.close()
    (entry,) = json.loads(text)["streams"]["orders"]
    assert entry["model"] == f"{__name__}.Order" and entry["kind"] == "dataclass" and entry["agent"] == "take"
    assert set(entry["schema"]["required"]) == {"item", "qty"} and entry["schema"]["title"] == "Order"
