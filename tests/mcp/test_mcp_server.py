"""The MCP server through a real in-memory client session (the SDK's Client on an MCPServer)."""

from __future__ import annotations

import json
from urllib.parse import urlsplit

from streammachine.config import Settings
from streammachine.mcp.server import WRITE_TOOLS
from tests.helpers import wait_until
from tests.mcp.mcp_client import call, connected

REFERENCE_TOOLS = {
    "stream_send",
    "stream_send_batch",
    "stream_read",
    "stream_info",
    "stream_list",
    "storage_read",
    "storage_write",
    "storage_delete",
    "storage_keys",
    "storage_clear",
    "health_check",
    "redis_info",
    "redis_ping",
    "obj_get",
    "obj_list",
    "obj_delete",
    "ohlc_create",
    "ohlc_update",
    "ohlc_get_candles",
    "ohlc_get_completed",
    "ohlc_flush",
    "ohlc_clear",
    "ohlc_stats",
    "ohlc_list",
}
EXTRA_TOOLS = {
    "stream_groups",
    "stream_pending",
    "stream_dead_letters",
    "stream_dead_letter_show",
    "stream_dead_letter_replay",
    "stream_dead_letter_purge",
    "stream_group_create",
    "stream_group_destroy",
    "stream_group_reset",
    "stream_group_read",
    "stream_group_ack",
    "stream_trim",
}


async def test_every_reference_tool_resource_and_prompt_is_listed(redis_url):
    async with connected(redis_url) as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
        assert REFERENCE_TOOLS | EXTRA_TOOLS <= set(tools)
        for tool in tools.values():
            assert tool.description and tool.input_schema["type"] == "object", tool.name
            assert tool.output_schema is not None, f"{tool.name} returns structured results"
        send = tools["stream_send"].input_schema
        assert send["required"] == ["stream", "message"]
        assert send["properties"]["message"]["type"] == "object"
        assert tools["stream_read"].input_schema["properties"]["count"]["maximum"] == 10000
        resources = {str(r.uri) for r in (await client.list_resources()).resources}
        assert resources == {"streammachine://config", "streammachine://status", "streammachine://catalog"}
        prompts = {p.name for p in (await client.list_prompts()).prompts}
        assert prompts == {"streammachine-guide", "stream-processing-patterns"}


async def test_stream_tools_round_trip(redis_url, sync_redis):
    async with connected(redis_url) as client:
        sent = await call(
            client, "stream_send", {"stream": "events", "message": {"type": "click", "n": 1, "meta": {"x": [1, 2]}}}
        )
        batch = await call(
            client, "stream_send_batch", {"stream": "events", "messages": [{"n": i} for i in range(2, 6)]}
        )
        assert batch["count"] == 4 and len(batch["ids"]) == 4
        assert sync_redis.xlen("events") == 5

        read = await call(client, "stream_read", {"stream": "events", "count": 2})
        assert [e["id"] for e in read["entries"]] == [sent["id"], batch["ids"][0]]
        assert read["entries"][0]["fields"] == {"type": "click", "n": "1", "meta": '{"x":[1,2]}'}
        latest = await call(client, "stream_read", {"stream": "events", "count": 2, "latest": True})
        assert [e["id"] for e in latest["entries"]] == batch["ids"][-2:]
        window = await call(
            client, "stream_read", {"stream": "events", "start": batch["ids"][1], "end": batch["ids"][2]}
        )
        assert window["count"] == 2

        sync_redis.set("plain-key", "not a stream")
        sync_redis.xadd("other", {"a": "1"})
        listed = await call(client, "stream_list", {})
        assert listed["streams"] == ["events", "other"] and listed["next_cursor"] is None
        assert (await call(client, "stream_list", {"pattern": "ev*"}))["streams"] == ["events"]
        first = await call(client, "stream_list", {"limit": 1})
        assert first["streams"] == ["events"] and first["next_cursor"] == "events"
        rest = await call(client, "stream_list", {"limit": 1, "cursor": first["next_cursor"]})
        assert rest["streams"] == ["other"] and rest["next_cursor"] is None

        info = await call(client, "stream_info", {"stream": "events"})
        assert (info["length"], info["first_id"], info["last_id"]) == (5, sent["id"], batch["ids"][-1])
        assert info["groups"] == [] and info["dead_letter_stream"] == "events:dead"

        assert "does not exist" in await call(client, "stream_info", {"stream": "nope"}, error=True)
        assert "is a Redis string, not a stream" in await call(
            client, "stream_read", {"stream": "plain-key"}, error=True
        )
        bad = await call(client, "stream_send", {"stream": "events", "message": {}}, error=True)
        assert "needs at least one field" in bad
        bad = await call(client, "stream_read", {"stream": "events", "count": 0}, error=True)
        assert "count" in bad and "greater than or equal to 1" in bad


async def test_groups_pending_and_dead_letters_of_a_running_app(redis_url, sync_redis, app_factory):
    app = app_factory("mcp-app")

    @app.agent("orders", group="billing")
    async def bill(record):
        if record.message.get("bad"):
            raise ValueError(f"cannot bill {record.key}")

    await app.startup()
    await app.send("orders", {"n": 1})
    bad_id = await app.send("orders", {"bad": "yes", "n": 2})
    await wait_until(lambda: app.stats("bill").dead_lettered == 1, 10, what="the bad order dead-lettered")
    sync_redis.xgroup_create("orders", "audit", id="0")
    sync_redis.xreadgroup("audit", "auditor-1", {"orders": ">"}, count=1)  # one delivered, never acked

    async with connected(redis_url) as client:
        groups = {g["name"]: g for g in (await call(client, "stream_groups", {"stream": "orders"}))["groups"]}
        assert set(groups) == {"billing", "audit"}
        assert groups["billing"]["pending"] == 0 and groups["billing"]["lag"] == 0
        assert [c["name"] for c in groups["audit"]["consumer_details"]] == ["auditor-1"]
        assert groups["audit"]["consumer_details"][0]["pending"] == 1

        pending = await call(client, "stream_pending", {"stream": "orders", "group": "audit"})
        assert pending["pending"] == 1 and pending["per_consumer"] == {"auditor-1": 1}
        (entry,) = pending["entries"]
        assert entry["consumer"] == "auditor-1" and entry["deliveries"] == 1
        assert (
            await call(client, "stream_pending", {"stream": "orders", "group": "audit", "consumer": "someone-else"})
        )["entries"] == []
        missing = await call(client, "stream_pending", {"stream": "orders", "group": "nope"}, error=True)
        assert "no consumer group 'nope'" in missing and "billing" in missing

        dead = await call(client, "stream_dead_letters", {"stream": "orders"})
        assert dead["dead_letter_stream"] == "orders:dead" and dead["length"] == 1
        (letter,) = dead["entries"]
        assert letter["original_id"] == bad_id and letter["group"] == "billing"
        assert letter["error"] == f"ValueError: cannot bill {bad_id}" and letter["deliveries"] == 3
        assert letter["fields"] == {"bad": "yes", "n": "2"}
        info = await call(client, "stream_info", {"stream": "orders"})
        assert info["dead_letter_length"] == 1


async def test_storage_tools_share_state_with_an_app_on_the_redis_backend(redis_url, app_factory):
    app = app_factory("stateful", storage_backend="redis")
    await app.storage.write("counter", 41)
    async with connected(redis_url) as client:
        read = await call(client, "storage_read", {"key": "counter"})
        assert (read["exists"], read["value"], read["truncated"]) == (True, 41, False)
        await call(client, "storage_write", {"key": "counter", "value": 42})
        await call(client, "storage_write", {"key": "config", "value": {"symbols": ["AAPL"], "live": True}})
        assert await app.storage.read("counter") == 42
        assert await app.storage.read("config") == {"symbols": ["AAPL"], "live": True}
        missing = await call(client, "storage_read", {"key": "nope", "default": 0})
        assert (missing["exists"], missing["value"]) == (False, 0)
        assert (await call(client, "storage_keys"))["keys"] == ["config", "counter"]
        assert (await call(client, "storage_delete", {"key": "config"}))["deleted"] is True
        assert (await call(client, "storage_delete", {"key": "config"}))["deleted"] is False

        refused = await call(client, "storage_clear", {}, error=True)
        assert "confirm: true" in refused
        assert "confirm: true" in await call(client, "storage_clear", {"confirm": False}, error=True)
        assert await app.storage.read("counter") == 42, "nothing cleared without confirmation"
        assert (await call(client, "storage_clear", {"confirm": True}))["cleared"] == 1
        assert await app.storage.keys() == []


async def test_health_tools(redis_url):
    async with connected(redis_url) as client:
        health = await call(client, "health_check")
        assert (health["status"], health["redis"], health["read_only"]) == ("healthy", "connected", False)
        assert health["server"].startswith("redis://:***@127.0.0.1:")
        assert (await call(client, "redis_ping"))["pong"] is True
        info = await call(client, "redis_info")
        assert info["valkey_version"].startswith("8.") and "used_memory_human" in info
        memory = await call(client, "redis_info", {"section": "memory"})
        assert "used_memory" in memory and "redis_version" not in memory


async def test_ohlc_tools(redis_url):
    minute = 60_000
    t0 = 1_638_360_000_000
    async with connected(redis_url) as client:
        created = await call(client, "ohlc_create", {"name": "market", "intervals": [minute, 5 * minute]})
        assert created == {"name": "market", "intervals": [minute, 5 * minute], "replaced": False}
        for offset, price, volume in [(0, 100.0, 1), (10_000, 105.0, 2), (20_000, 99.0, 3), (minute, 101.0, 4)]:
            await call(
                client,
                "ohlc_update",
                {"name": "market", "symbol": "AAPL", "price": price, "volume": volume, "timestamp_ms": t0 + offset},
            )
        candles = await call(client, "ohlc_get_candles", {"name": "market", "symbol": "AAPL", "interval_ms": minute})
        assert candles["count"] == 2
        first = candles["candles"][0]
        assert (
            first["open"],
            first["high"],
            first["low"],
            first["close"],
            first["volume"],
            first["trade_count"],
            first["candle_start_ms"],
        ) == (100.0, 105.0, 99.0, 99.0, 6.0, 3, t0)
        completed = await call(
            client, "ohlc_get_completed", {"name": "market", "symbol": "AAPL", "interval_ms": minute}
        )
        assert [c["candle_start_ms"] for c in completed["candles"]] == [t0]
        stats = await call(client, "ohlc_stats", {"name": "market"})
        assert stats["tick_count"] == 4 and stats["symbols"] == ["AAPL"]
        assert stats["candles"] == {"AAPL": {str(minute): 2, str(5 * minute): 1}}
        flushed = await call(client, "ohlc_flush", {"name": "market", "symbol": "AAPL", "interval_ms": minute})
        assert flushed["count"] == 1
        assert (await call(client, "ohlc_get_candles", {"name": "market", "symbol": "AAPL", "interval_ms": minute}))[
            "count"
        ] == 1
        await call(client, "ohlc_create", {"name": "other"})
        assert [a["name"] for a in (await call(client, "ohlc_list"))["aggregators"]] == ["market", "other"]
        cleared = await call(client, "ohlc_clear", {"name": "market"})
        assert cleared["tick_count"] == 0 and cleared["symbols"] == []

        assert "no OHLC aggregator named 'nope'" in await call(client, "ohlc_stats", {"name": "nope"}, error=True)
        wrong = await call(
            client, "ohlc_get_candles", {"name": "market", "symbol": "AAPL", "interval_ms": 1234}, error=True
        )
        assert "1234" in wrong and "60000" in wrong
        assert "interval" in await call(client, "ohlc_create", {"name": "x", "intervals": [-5]}, error=True)
        assert "price" in await call(
            client, "ohlc_update", {"name": "market", "symbol": "AAPL", "price": float("nan")}, error=True
        )


async def test_resources_and_prompts(redis_url, sync_redis):
    sync_redis.xadd("s1", {"a": "1"})
    async with connected(redis_url) as client:
        config = json.loads((await client.read_resource("streammachine://config")).contents[0].text)
        assert config["redis"]["url"].startswith("redis://:***@")
        assert config["storage"] == {
            "backend": "redis",
            "hash": "streammachine:storage",
            "note": "apps share this state when they run with STREAMMACHINE_STORAGE=redis",
        }
        assert config["consumers"]["STREAMMACHINE_DEFAULT_GROUP"] == "eventengine"
        await call(client, "storage_write", {"key": "k", "value": 1})
        status = json.loads((await client.read_resource("streammachine://status")).contents[0].text)
        assert status["redis"] == "connected" and status["streams"] == 1 and status["storage"]["keys"] == 1
        client.transcript += [json.dumps(config), json.dumps(status)]

        guide = await client.get_prompt("streammachine-guide")
        assert "@app.agent" in guide.messages[0].content.text
        agents = await client.get_prompt("streammachine-guide", {"topic": "agents"})
        assert "max_deliveries" in agents.messages[0].content.text
        patterns = await client.get_prompt("stream-processing-patterns")
        text = patterns.messages[0].content.text
        assert all(word in text for word in ("Pipeline", "Fan-out", "OHLC"))
        fan_out = await client.get_prompt("stream-processing-patterns", {"pattern": "fan-out"})
        assert "analytics" in fan_out.messages[0].content.text


async def test_read_only_mode_hides_write_tools(redis_url, monkeypatch):
    monkeypatch.setenv("STREAMMACHINE_MCP_READ_ONLY", "1")
    for kwargs in ({"settings": Settings.from_env()}, {"read_only": True}):
        async with connected(redis_url, **kwargs) as client:
            names = {tool.name for tool in (await client.list_tools()).tools}
            assert not names & WRITE_TOOLS and {"stream_read", "storage_read", "ohlc_create"} <= names
            assert (await call(client, "health_check"))["read_only"] is True
            text = await call(client, "stream_send", {"stream": "s", "message": {"a": 1}}, error=True)
            assert "stream_send" in text
    assert {"stream_send", "storage_clear", "obj_delete"} <= WRITE_TOOLS


async def test_failures_are_tool_errors_and_never_show_the_password():
    """A down server: every tool fails as a tool error naming the problem, the session goes on."""
    url = "redis://:s3cret-pass-word@127.0.0.1:1/0"  # nothing listens on port 1
    async with connected(url) as client:
        for name, arguments in [
            ("stream_send", {"stream": "s", "message": {"a": 1}}),
            ("stream_list", {}),
            ("storage_keys", {}),
            ("redis_ping", {}),
        ]:
            text = await call(client, name, arguments, error=True)
            assert "ConnectionError" in text or "connect" in text.lower()
        health = await call(client, "health_check")
        assert health["status"] == "unhealthy" and health["redis"] == "disconnected"
        status = (await client.read_resource("streammachine://status")).contents[0].text
        config = (await client.read_resource("streammachine://config")).contents[0].text
        assert json.loads(status)["redis"] == "disconnected"
        created = await call(client, "ohlc_create", {"name": "m"})  # the server keeps serving
        assert created["name"] == "m"
        everything = " ".join(client.transcript) + status + config
        assert "s3cret-pass-word" not in everything


async def test_no_output_contains_the_server_password(redis_url, sync_redis):
    password = urlsplit(redis_url).password
    assert password
    sync_redis.xadd("s", {"a": "1"})
    async with connected(redis_url) as client:
        for tool in (await client.list_tools()).tools:
            arguments = {"stream": "s"} if "stream" in tool.input_schema.get("required", []) else {}
            result = await client.call_tool(tool.name, arguments)
            client.transcript.append(
                " ".join(getattr(b, "text", "") for b in result.content)
                + json.dumps(result.structured_content, default=str)
            )
        for uri in ("streammachine://config", "streammachine://status"):
            client.transcript.append((await client.read_resource(uri)).contents[0].text)
        assert len(client.transcript) > 25
        assert not [t for t in client.transcript if password in t]


async def test_object_tools_return_only_signed_objects(redis_url, sync_redis, monkeypatch):
    from streammachine.state.objstore import RedisObjectStorage

    monkeypatch.setenv("STREAMMACHINE_SECRET_KEY", "test-signing-key")
    objects = RedisObjectStorage(url=redis_url)
    await objects.store_with_pickle("model:a", {"weights": [1.5, 2.5], "name": "a"})
    await objects.store_with_pickle("model:b", {1, 2, 3})
    await objects.store_with_pickle("other", "text")
    await objects.close()
    sync_redis.set("obj:forged", b"\x80\x04\x95not signed")
    async with connected(redis_url, settings=Settings.from_env()) as client:
        got = await call(client, "obj_get", {"key": "model:a"})
        assert got["type"] == "builtins.dict" and got["value"] == {"weights": [1.5, 2.5], "name": "a"}
        assert got["repr"] == repr({"weights": [1.5, 2.5], "name": "a"})
        assert (await call(client, "obj_get", {"key": "model:b"}))["value"] == [1, 2, 3]
        assert "not a signed StreamMachine object" in await call(client, "obj_get", {"key": "forged"}, error=True)
        assert "no object stored at 'nope'" in await call(client, "obj_get", {"key": "nope"}, error=True)
        assert (await call(client, "obj_list"))["keys"] == ["forged", "model:a", "model:b", "other"]
        assert (await call(client, "obj_list", {"pattern": "model:*"}))["count"] == 2

        refused = await call(client, "obj_delete", {"pattern": "model:*"}, error=True)
        assert "would delete 2 object(s)" in refused and "confirm: true" in refused
        assert sync_redis.exists("obj:model:a", "obj:model:b") == 2
        assert (await call(client, "obj_delete", {"pattern": "model:*", "confirm": True}))["deleted"] == 2
        assert (await call(client, "obj_list"))["keys"] == ["forged", "other"]

    monkeypatch.setenv("STREAMMACHINE_SECRET_KEY", "another-key")
    async with connected(redis_url, settings=Settings.from_env()) as client:
        text = await call(client, "obj_get", {"key": "other"}, error=True)
        assert "fails its signature check" in text, "signed with another key: refused, not unpickled"


async def test_streammachine_records_caps_what_one_read_returns(redis_url, sync_redis):
    from streammachine.config import Settings

    sync_redis.xadd("capped", {"a": 1})
    async with connected(redis_url, settings=Settings.from_env({"STREAMMACHINE_RECORDS": "5"})) as client:
        assert (await call(client, "stream_read", {"stream": "capped", "count": 5}))["count"] == 1
        text = await call(client, "stream_read", {"stream": "capped", "count": 6}, error=True)
        assert "count=6" in text and "1..5 (STREAMMACHINE_RECORDS)" in text


def test_building_the_server_leaves_the_root_logger_alone():
    """Regression: the SDK's constructor ran logging.basicConfig, so building a server in a notebook kernel
    (no root handler yet) put a rich stderr handler on the root logger: every INFO line of every library,
    in red under the cells (notebook 04 showed the SDK's 'Tool failed' lines)."""
    import logging

    from streammachine.mcp import build_server

    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    root.handlers = []
    try:
        build_server(redis_url="redis://127.0.0.1:1")
        assert root.handlers == [] and root.level == saved_level
    finally:
        root.handlers = saved_handlers
        root.setLevel(saved_level)
