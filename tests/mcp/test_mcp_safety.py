"""The MCP server's safety rules through a real in-memory client: namespaces, confirmation, annotations,
argument checks, phrased errors, bounded and paged results, limits that follow the settings, the lifespan."""

from __future__ import annotations

import json

import pytest
import redis
from mcp import Client

from streammachine.config import ConfigError, Settings
from streammachine.mcp import build_server
from streammachine.mcp.server import WRITE_TOOLS
from streammachine.state.objstore import RedisObjectStorage
from tests.helpers import wait_until
from tests.mcp.mcp_client import call, connected

DESTRUCTIVE = {
    "stream_trim",
    "stream_group_destroy",
    "stream_group_reset",
    "stream_group_ack",
    "stream_dead_letter_replay",
    "stream_dead_letter_purge",
    "storage_write",
    "storage_delete",
    "storage_clear",
    "obj_delete",
    "ohlc_create",
    "ohlc_flush",
    "ohlc_clear",
}
ADDITIVE = {"stream_send", "stream_send_batch", "stream_group_create", "stream_group_read", "ohlc_update"}


async def _store_objects(redis_url, prefix="obj:"):
    objects = RedisObjectStorage(url=redis_url, prefix=prefix)
    await objects.store_with_pickle("model:a", {"w": [1.5]})
    await objects.store_with_pickle("model:b", [1, 2])
    await objects.close()


def _untouched(sync_redis):
    return {
        "stream": sync_redis.xlen("events"),
        "storage": sync_redis.hgetall("streammachine:storage"),
        "plain": sync_redis.get("plain"),
        "stream under the prefix": sync_redis.xlen("obj:a-stream"),
    }


async def test_object_tools_cannot_leave_the_object_namespace(redis_url, sync_redis, monkeypatch):
    monkeypatch.setenv("STREAMMACHINE_SECRET_KEY", "k")
    await _store_objects(redis_url)
    sync_redis.xadd("events", {"a": "1"})
    sync_redis.hset("streammachine:storage", "counter", "41")
    sync_redis.set("plain", "not an object")
    sync_redis.xadd("obj:a-stream", {"a": "1"})  # a stream that happens to sit under the prefix
    before = _untouched(sync_redis)
    async with connected(redis_url, settings=Settings.from_env()) as client:
        for prefix in ("", "*", "../", "streammachine:", "ob", "obj:*", "other:"):
            for name, arguments in (
                ("obj_delete", {"pattern": "*", "confirm": True, "prefix": prefix}),
                ("obj_list", {"prefix": prefix}),
                ("obj_get", {"key": "plain", "prefix": prefix}),
            ):
                text = await call(client, name, arguments, error=True)
                assert "object tools work only under 'obj:'" in text, (name, prefix, text)
        assert (await call(client, "obj_list"))["keys"] == ["model:a", "model:b"], "streams under it are not listed"
        assert "no object stored at '../plain'" in await call(client, "obj_get", {"key": "../plain"}, error=True)
        assert "is a Redis stream, not a stored object" in await call(
            client, "obj_get", {"key": "a-stream"}, error=True
        )
        narrowed = await call(client, "obj_list", {"prefix": "obj:model:"})
        assert narrowed["keys"] == ["a", "b"] and narrowed["prefix"] == "obj:model:"
        assert (await call(client, "obj_delete", {"pattern": "*", "confirm": True}))["deleted"] == 2
        assert sync_redis.exists("obj:model:a", "obj:model:b") == 0
    assert _untouched(sync_redis) == before, "nothing outside the object namespace changed"


async def test_the_object_prefix_is_configured_not_chosen_by_the_caller(redis_url, sync_redis, monkeypatch):
    monkeypatch.setenv("STREAMMACHINE_SECRET_KEY", "k")
    monkeypatch.setenv("STREAMMACHINE_MCP_OBJECT_PREFIX", "app1:obj:")
    await _store_objects(redis_url, prefix="app1:obj:")
    await _store_objects(redis_url, prefix="obj:")
    async with connected(redis_url, settings=Settings.from_env()) as client:
        assert (await call(client, "obj_list"))["keys"] == ["model:a", "model:b"]
        assert "only under 'app1:obj:'" in await call(client, "obj_list", {"prefix": "obj:"}, error=True)
        assert (await call(client, "obj_delete", {"pattern": "*", "confirm": True}))["deleted"] == 2
        config = json.loads((await client.read_resource("streammachine://config")).contents[0].text)
        assert config["mcp"]["STREAMMACHINE_MCP_OBJECT_PREFIX"] == "app1:obj:"
    assert sync_redis.exists("obj:model:a", "obj:model:b") == 2, "the other app's objects stay"


async def test_stream_tools_stay_out_of_the_other_namespaces(redis_url, sync_redis):
    sync_redis.hset("streammachine:storage", "counter", "41")
    sync_redis.set("plain", "a string")
    sync_redis.xadd("obj:a-stream", {"a": "1"})
    async with connected(redis_url) as client:
        for stream in ("streammachine:storage", "obj:x", "obj:a-stream"):
            for name, arguments in (
                ("stream_send", {"stream": stream, "message": {"a": 1}}),
                ("stream_send_batch", {"stream": stream, "messages": [{"a": 1}]}),
                ("stream_read", {"stream": stream}),
                ("stream_info", {"stream": stream}),
                ("stream_trim", {"stream": stream, "maxlen": 0, "confirm": True}),
                ("stream_group_create", {"stream": stream, "group": "g", "mkstream": True}),
                ("stream_dead_letters", {"stream": "events", "dead_letter_stream": stream}),
            ):
                text = await call(client, name, arguments, error=True)
                assert "storage hash" in text or "object namespace" in text, (name, stream, text)
        assert "is a Redis string, not a stream" in await call(
            client, "stream_send", {"stream": "plain", "message": {"a": 1}}, error=True
        )
        assert "is a Redis string, not a stream" in await call(
            client, "stream_send_batch", {"stream": "plain", "messages": [{"a": 1}]}, error=True
        )
        assert (await call(client, "stream_list"))["streams"] == []
    assert sync_redis.exists("obj:x") == 0 and sync_redis.xlen("obj:a-stream") == 1
    assert sync_redis.hgetall("streammachine:storage") == {"counter": "41"} and sync_redis.get("plain") == "a string"


@pytest.mark.parametrize("confirm", ["true", "yes", 1, "1", "True", None])
async def test_only_the_boolean_true_confirms(redis_url, sync_redis, monkeypatch, confirm):
    monkeypatch.setenv("STREAMMACHINE_SECRET_KEY", "k")
    await _store_objects(redis_url)
    sync_redis.hset("streammachine:storage", "k", "1")
    for i in range(3):
        sync_redis.xadd("s", {"n": i})
    sync_redis.xgroup_create("s", "g", id="0")
    async with connected(redis_url, settings=Settings.from_env()) as client:
        for name, arguments in (
            ("storage_clear", {}),
            ("obj_delete", {"pattern": "*"}),
            ("stream_trim", {"stream": "s", "maxlen": 0}),
            ("stream_group_destroy", {"stream": "s", "group": "g"}),
            ("stream_group_reset", {"stream": "s", "group": "g", "to": "end"}),
        ):
            text = await call(client, name, {**arguments, "confirm": confirm}, error=True)
            assert "confirm" in text and ("only the JSON boolean true" in text or "confirm: true" in text), text
        assert sync_redis.hlen("streammachine:storage") == 1 and sync_redis.exists("obj:model:a") == 1
        assert sync_redis.xlen("s") == 3 and sync_redis.xinfo_groups("s")[0]["name"] == "g"
        assert (await call(client, "stream_trim", {"stream": "s", "maxlen": 1, "confirm": True}))["removed"] == 2


async def test_every_tool_is_annotated_with_a_title_limits_and_an_example(redis_url):
    async with connected(redis_url) as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
    for name, tool in tools.items():
        hints = tool.annotations
        assert hints is not None and hints.title and tool.title == hints.title, name
        assert None not in (hints.read_only_hint, hints.destructive_hint, hints.idempotent_hint), name
        assert hints.open_world_hint is False, name
        assert tool.input_schema.get("additionalProperties") is False, name
        example = json.loads(tool.description.rsplit("Example: ", 1)[1])
        properties = tool.input_schema.get("properties", {})
        assert set(example) <= set(properties) and set(tool.input_schema.get("required", [])) <= set(example), name
        if name in DESTRUCTIVE:
            assert (hints.read_only_hint, hints.destructive_hint) == (False, True), name
        elif name in ADDITIVE:
            assert (hints.read_only_hint, hints.destructive_hint, hints.idempotent_hint) == (
                False,
                False,
                name == "stream_group_create",
            ), name
        else:
            assert (hints.read_only_hint, hints.idempotent_hint) == (True, True), name
    assert WRITE_TOOLS <= DESTRUCTIVE | ADDITIVE
    assert "10000 messages" in tools["stream_send_batch"].description
    assert "STREAMMACHINE_RECORDS" in tools["stream_read"].input_schema["properties"]["count"]["description"]


async def test_unknown_arguments_are_refused_and_errors_speak_to_the_caller(redis_url, sync_redis):
    sync_redis.xadd("s", {"a": "1"})
    async with connected(redis_url) as client:
        text = await call(client, "stream_read", {"stream": "s", "cont": 5}, error=True)
        assert "unknown argument(s) 'cont'" in text and "count" in text
        text = await call(client, "stream_send", {"stream": "s", "message": {"a": 1}, "maxlen": 1}, error=True)
        assert "unknown argument(s) 'maxlen'" in text
        assert sync_redis.xlen("s") == 1, "a refused call sends nothing"
        bad = [
            ("stream_read", {"stream": "s", "count": "many"}),
            ("stream_read", {"stream": "s", "start": "yesterday"}),
            ("stream_send", {"stream": "s"}),
            ("stream_send_batch", {"stream": "s", "messages": []}),
            ("ohlc_create", {"name": "m", "intervals": "60000"}),
            ("redis_info", {"section": "memory; FLUSHALL"}),
        ]
        for name, arguments in bad:
            text = await call(client, name, arguments, error=True)
            for leak in ("validation error", "type=", "pydantic", "Arguments", "ResponseError", "Traceback"):
                assert leak not in text, (name, text)
        assert "start='yesterday': expected '-' or '+', a time in ms" in await call(
            client, "stream_read", {"stream": "s", "start": "yesterday"}, error=True
        )
        assert "message is required" in await call(client, "stream_send", {"stream": "s"}, error=True)


async def test_timestamps_that_look_like_seconds_are_refused(redis_url, sync_redis):
    sync_redis.xadd("s", {"a": "1"})
    async with connected(redis_url) as client:
        await call(client, "ohlc_create", {"name": "m", "intervals": [60000]})
        text = await call(
            client, "ohlc_update", {"name": "m", "symbol": "X", "price": 1.0, "timestamp_ms": 1638360000}, error=True
        )
        assert "looks like a time in seconds (2021-12-01)" in text and "pass 1638360000000" in text
        text = await call(client, "stream_read", {"stream": "s", "start": "1638360000"}, error=True)
        assert "looks like a time in seconds" in text and "1638360000000" in text
        text = await call(
            client,
            "ohlc_get_completed",
            {"name": "m", "symbol": "X", "interval_ms": 60000, "as_of_ms": 1700000000},
            error=True,
        )
        assert "looks like a time in seconds" in text
        assert (await call(client, "ohlc_stats", {"name": "m"}))["tick_count"] == 0, "the refused tick was not added"
        for stamp in (0, 60_000, 1638360000000):  # synthetic small times and real ms pass
            await call(client, "ohlc_update", {"name": "m", "symbol": "X", "price": 1.0, "timestamp_ms": stamp})


async def test_ohlc_refuses_values_that_would_break_its_output(redis_url):
    async with connected(redis_url) as client:
        await call(client, "ohlc_create", {"name": "m", "intervals": [60000]})
        tick = {"name": "m", "symbol": "X", "price": 1.0, "timestamp_ms": 1638360000000}
        for _ in range(2):
            assert "volume=1e+308" in await call(client, "ohlc_update", {**tick, "volume": 1e308}, error=True)
        assert "price=-1e+300" in await call(client, "ohlc_update", {**tick, "price": -1e300}, error=True)
        for _ in range(2):
            await call(client, "ohlc_update", {**tick, "volume": 1e18})
        candles = await call(client, "ohlc_get_candles", {"name": "m", "symbol": "X", "interval_ms": 60000})
        assert candles["candles"][0]["volume"] == 2e18


async def test_read_defaults_and_schemas_follow_streammachine_records(redis_url, sync_redis):
    for i in range(8):
        sync_redis.xadd("s", {"n": i})
    sync_redis.xgroup_create("s", "g", id="0")
    sync_redis.xreadgroup("g", "c", {"s": ">"}, count=8)
    settings = Settings.from_env({"STREAMMACHINE_RECORDS": "5"})
    async with connected(redis_url, settings=settings) as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
        for name in ("stream_read", "stream_pending", "stream_dead_letters", "stream_group_read"):
            count = tools[name].input_schema["properties"]["count"]
            assert count["maximum"] == 5 and count["default"] <= 5, name
        assert (await call(client, "stream_read", {"stream": "s"}))["count"] == 5
        assert len((await call(client, "stream_pending", {"stream": "s", "group": "g"}))["entries"]) == 5
        assert (await call(client, "stream_dead_letters", {"stream": "s"}))["entries"] == []
        assert (
            await call(client, "stream_group_read", {"stream": "s", "group": "g", "consumer": "c", "pending": True})
        )["count"] == 5


def _wire(result) -> int:
    text = " ".join(getattr(block, "text", "") for block in result.content)
    return len(json.dumps(text)) + len(json.dumps(result.structured_content))


async def test_results_are_bounded_paged_and_say_when_cut(redis_url, sync_redis):
    limit = 16384
    ids = [sync_redis.xadd("s", {"n": str(i), "pad": "p" * 1000}) for i in range(40)]
    huge = sync_redis.xadd("s", {"n": "big", "blob": "b" * 100_000, "small": "ok"})
    for i in range(300):
        sync_redis.hset("streammachine:storage", f"key-{i:03}", "1")
    sync_redis.hset("streammachine:storage", "big", json.dumps("v" * 50_000))
    settings = Settings.from_env({"STREAMMACHINE_MCP_MAX_RESULT_BYTES": str(limit)})
    async with connected(redis_url, settings=settings) as client:
        seen, cursor, pages = [], None, 0
        while True:
            result = await client.call_tool(
                "stream_read", {"stream": "s", "count": 100, **({"cursor": cursor} if cursor else {})}
            )
            assert not result.is_error and _wire(result) <= limit, _wire(result)
            page = result.structured_content
            seen += page["entries"]
            pages += 1
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert pages > 3 and [e["id"] for e in seen] == ids + [huge], "every entry once, in order"
        last = seen[-1]
        assert last["truncated_fields"] == {"blob": 100_000} and len(last["fields"]["blob"]) < 100_000
        assert last["fields"]["small"] == "ok" and "truncated_fields" not in seen[0]

        newest = await call(client, "stream_read", {"stream": "s", "count": 100, "latest": True})
        assert newest["truncated"] and newest["entries"][-1]["id"] == huge
        older = await call(client, "stream_read", {"stream": "s", "latest": True, "cursor": newest["next_cursor"]})
        assert ids.index(older["entries"][-1]["id"]) == ids.index(newest["entries"][0]["id"]) - 1

        keys, cursor = [], None
        while True:
            page = await call(client, "storage_keys", {"limit": 120, **({"cursor": cursor} if cursor else {})})
            keys += page["keys"]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert keys == ["big"] + [f"key-{i:03}" for i in range(300)]
        big = await call(client, "storage_read", {"key": "big"})
        assert big["truncated"] and big["value"] is None and big["size_bytes"] == 50_002


async def test_request_limit_applies_on_every_transport_and_says_how_to_split(redis_url, sync_redis):
    settings = Settings.from_env({"STREAMMACHINE_MCP_MAX_REQUEST_BYTES": "20000"})
    messages = [{"n": i, "pad": "x" * 90} for i in range(400)]
    async with connected(redis_url, settings=settings) as client:
        text = await call(client, "stream_send_batch", {"stream": "s", "messages": messages}, error=True)
        assert "over the limit of 20000 (STREAMMACHINE_MCP_MAX_REQUEST_BYTES" in text
        per_call = int(text.split("calls of at most ")[1].split()[0])
        assert sync_redis.exists("s") == 0
        for start in range(0, len(messages), per_call):  # the advice works
            await call(client, "stream_send_batch", {"stream": "s", "messages": messages[start : start + per_call]})
        assert sync_redis.xlen("s") == 400


def _server_connections(sync_redis) -> int:
    return sum(1 for c in sync_redis.client_list() if c.get("cmd") not in ("client|list", "client"))


async def test_the_lifespan_owns_the_redis_connection(private_server):
    sync_redis = redis.Redis.from_url(private_server.url, decode_responses=True)
    baseline = _server_connections(sync_redis)
    server = build_server(redis_url=private_server.url)
    async with Client(server) as first:
        await first.call_tool("stream_send", {"stream": "s", "message": {"a": 1}})
        async with Client(server) as second:  # overlapping sessions share the connection
            await second.call_tool("stream_send", {"stream": "s", "message": {"a": 2}})
        assert _server_connections(sync_redis) > baseline, "the first session's connection stays open"
        read = await first.call_tool("stream_read", {"stream": "s"})
        assert not read.is_error and read.structured_content["count"] == 2
    await wait_until(lambda: _server_connections(sync_redis) == baseline, 10, what="the server's connections to close")
    async with Client(server) as again:  # a new session opens a new connection
        assert not (await again.call_tool("redis_ping", {})).is_error
    await wait_until(lambda: _server_connections(sync_redis) == baseline, 10, what="the connections to close again")


def test_mcp_settings_parse_and_bad_values_name_the_variable():
    settings = Settings.from_env(
        {
            "STREAMMACHINE_MCP_ALLOWED_HOSTS": "a.example, b.example:8000,",
            "STREAMMACHINE_MCP_TOKEN": "tok-123",
            "STREAMMACHINE_MCP_OBJECT_PREFIX": "app:obj:",
        }
    )
    assert settings.mcp_allowed_hosts == ("a.example", "b.example:8000")
    assert settings.mcp_object_prefix == "app:obj:" and "tok-123" not in repr(settings)
    for name, value in (
        ("STREAMMACHINE_MCP_OBJECT_PREFIX", "obj:*"),
        ("STREAMMACHINE_MCP_OBJECT_PREFIX", "  "),
        ("STREAMMACHINE_MCP_MAX_RESULT_BYTES", "100"),
        ("STREAMMACHINE_MCP_MAX_REQUEST_BYTES", "4MB"),
    ):
        with pytest.raises(ConfigError, match=name):
            Settings.from_env({name: value})
