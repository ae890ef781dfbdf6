"""MCP dead-letter tools through a real client: stream_dead_letters, _show, _replay and _purge."""

from __future__ import annotations

from streammachine import ConsumerConfig
from tests.helpers import wait_until
from tests.mcp.mcp_client import call, connected
from tests.redis.test_deadletters import poison


async def test_list_and_show_agree_with_the_core(redis_url, sync_redis):
    ids = poison(sync_redis, "orders", 3, _dlq_error="an earlier failure")  # a replayed dead letter, failed again
    async with connected(redis_url) as client:
        page = await call(client, "stream_dead_letters", {"stream": "orders", "count": 2})
        assert [e["id"] for e in page["entries"]] == ids[:2] and page["length"] == 3
        first = page["entries"][0]
        assert first["fields"] == {"i": "0", "_dlq_error": "an earlier failure"}, "the original record, as replayed"
        assert (first["stream"], first["original_id"], first["error"]) == ("orders", "1000-0", "ValueError: poison")
        rest = await call(client, "stream_dead_letters", {"stream": "orders:dead", "cursor": page["next_cursor"]})
        assert [e["id"] for e in rest["entries"]] == ids[2:] and rest["next_cursor"] is None
        shown = await call(client, "stream_dead_letter_show", {"stream": "orders", "id": ids[1]})
        assert shown == page["entries"][1]
        missing = await call(client, "stream_dead_letter_show", {"stream": "orders", "id": "1-0"}, error=True)
        assert "'orders:dead' has no entry 1-0" in missing


async def test_replay_and_purge_need_confirm_true(redis_url, sync_redis):
    ids = poison(sync_redis, "orders", 5)
    async with connected(redis_url) as client:
        preview = await call(client, "stream_dead_letter_replay", {"stream": "orders"}, error=True)
        assert "would send all 5 dead letters of 'orders:dead' to the streams they came from" in preview
        for loose in ("true", 1, "yes"):
            refused = await call(
                client, "stream_dead_letter_replay", {"stream": "orders", "confirm": loose}, error=True
            )
            assert "only the JSON boolean true confirms" in refused
        preview = await call(client, "stream_dead_letter_purge", {"stream": "orders", "ids": ids[:2]}, error=True)
        assert "would delete 2 dead letter(s) of 'orders:dead'" in preview
        assert sync_redis.xlen("orders:dead") == 5 and not sync_redis.exists("orders")

        done = await call(client, "stream_dead_letter_replay", {"stream": "orders", "ids": ids[:2], "confirm": True})
        assert (done["replayed"], done["per_stream"], done["length"], done["atomic"]) == (2, {"orders": 2}, 3, True)
        assert [e["dead_letter_id"] for e in done["entries"]] == ids[:2]
        assert [f["i"] for _, f in sync_redis.xrange("orders")] == ["0", "1"]
        purged = await call(client, "stream_dead_letter_purge", {"stream": "orders", "before": ids[3], "confirm": True})
        assert (purged["removed"], purged["length"]) == (1, 2)
        purged = await call(client, "stream_dead_letter_purge", {"stream": "orders", "ids": [ids[4]], "confirm": True})
        assert (purged["removed"], purged["length"]) == (1, 1)
        purged = await call(client, "stream_dead_letter_purge", {"stream": "orders", "confirm": True})
        assert (purged["removed"], purged["length"]) == (1, 0)


async def test_bad_input_is_a_tool_error_and_changes_nothing(redis_url, sync_redis):
    ids = poison(sync_redis, "orders", 2)
    sync_redis.hset("hashy:dead", "a", "1")
    async with connected(redis_url) as client:
        cases = [
            ("stream_dead_letter_replay", {"stream": "orders", "ids": ["1-0"], "confirm": True}, "has no entry 1-0"),
            ("stream_dead_letter_replay", {"stream": "orders", "ids": ["1-0"]}, "has no entry 1-0"),
            ("stream_dead_letter_purge", {"stream": "orders", "ids": [ids[0], "2-0"], "confirm": True}, "no entry 2-0"),
            ("stream_dead_letter_replay", {"stream": "orders", "ids": ["nope"], "confirm": True}, "ids='nope'"),
            ("stream_dead_letter_show", {"stream": "orders", "id": "1700000000"}, "looks like a time in seconds"),
            ("stream_dead_letters", {"stream": "hashy"}, "'hashy:dead' is a Redis hash"),
            ("stream_dead_letter_replay", {"stream": "hashy", "confirm": True}, "'hashy:dead' is a Redis hash"),
            (
                "stream_dead_letter_replay",
                {"stream": "orders", "target": "hashy:dead", "confirm": True},
                "cannot replay into 'hashy:dead'",
            ),
            (
                "stream_dead_letter_replay",
                {"stream": "orders", "target": "streammachine:storage", "confirm": True},
                "storage hash",
            ),
            ("stream_dead_letter_replay", {"stream": "orders", "target": "obj:x", "confirm": True}, "object namespace"),
            ("stream_dead_letter_purge", {"stream": "orders", "dead_letter_stream": "obj:d"}, "object namespace"),
            (
                "stream_dead_letter_purge",
                {"stream": "orders", "ids": [ids[0]], "before": ids[1], "confirm": True},
                "not both",
            ),
            (
                "stream_dead_letter_purge",
                {"stream": "orders", "ids": [], "confirm": True},
                "ids=[]: List should have at least 1",
            ),
            ("stream_dead_letter_replay", {"stream": "orders", "colour": "red"}, "unknown argument(s) 'colour'"),
        ]
        for name, arguments, expected in cases:
            text = await call(client, name, arguments, error=True)
            assert expected in text, (name, arguments, text)
    assert sync_redis.xlen("orders:dead") == 2 and not sync_redis.exists("orders")


async def test_read_only_mode_lists_but_never_replays_or_purges(redis_url, sync_redis):
    poison(sync_redis, "orders", 1)
    async with connected(redis_url, read_only=True) as client:
        names = {tool.name for tool in (await client.list_tools()).tools}
        assert {"stream_dead_letters", "stream_dead_letter_show"} <= names
        assert not {"stream_dead_letter_replay", "stream_dead_letter_purge"} & names
        text = await call(client, "stream_dead_letter_purge", {"stream": "orders", "confirm": True}, error=True)
        assert "Unknown tool" in text
    assert sync_redis.xlen("orders:dead") == 1


async def test_replay_through_mcp_after_a_hot_swap_handles_each_entry_once(redis_url, app_factory, sync_redis):
    """DLQ replay end to end over MCP: poison entries dead-lettered by a running agent, handler fixed, replayed."""
    app = app_factory(consumer_config=ConsumerConfig(count=20, block_ms=100, retry_delay_ms=20, max_deliveries=2))
    handled: list = []

    @app.agent("invoices", group="billing", name="bill")
    async def broken(message):
        if message.message["kind"] == "odd":
            raise KeyError("no customer")
        handled.append(message.message["n"])

    await app.startup()
    await app.send_batch("invoices", [{"n": n, "kind": "odd" if n % 4 == 1 else "ok"} for n in range(40)])
    await wait_until(lambda: sync_redis.xlen("invoices:dead") == 10, what="the 10 poison entries dead-lettered")

    @app.agent("invoices", group="billing", name="bill")
    async def fixed(message):
        handled.append(message.message["n"])

    await wait_until(lambda: app.last_swap_ms is not None, what="the fixed handler swapped in")
    async with connected(redis_url) as client:
        listed = await call(client, "stream_dead_letters", {"stream": "invoices"})
        assert {e["error"] for e in listed["entries"]} == {"KeyError: 'no customer'"}
        done = await call(client, "stream_dead_letter_replay", {"stream": "invoices", "confirm": True})
        assert (done["replayed"], done["length"], done["missing"]) == (10, 0, [])
    await wait_until(lambda: len(handled) == 40, what="every entry handled")
    assert sorted(handled, key=int) == [str(n) for n in range(40)], "each entry handled exactly once"
    assert sync_redis.xlen("invoices:dead") == 0 and sync_redis.xlen("invoices") == 50


async def test_an_agents_own_dead_letter_stream(redis_url, sync_redis):
    """Regression: with dead_letter_stream set, every tool used '<it>:dead' once it had resolved the name."""
    ids = poison(sync_redis, "orders", 3, dead="failures")
    async with connected(redis_url) as client:
        where = {"stream": "orders", "dead_letter_stream": "failures"}
        listed = await call(client, "stream_dead_letters", where)
        assert [e["id"] for e in listed["entries"]] == ids and listed["length"] == 3
        assert (await call(client, "stream_dead_letter_show", {**where, "id": ids[0]}))["original_id"] == "1000-0"
        assert "would send 1 dead letter(s) of 'failures'" in await call(
            client, "stream_dead_letter_replay", {**where, "ids": [ids[0]]}, error=True
        )
        done = await call(client, "stream_dead_letter_replay", {**where, "ids": [ids[0]], "confirm": True})
        assert (done["replayed"], done["length"]) == (1, 2) and sync_redis.xlen("orders") == 1
        assert "would delete all 2 dead letters of 'failures'" in await call(
            client, "stream_dead_letter_purge", where, error=True
        )
        purged = await call(client, "stream_dead_letter_purge", {**where, "confirm": True})
        assert (purged["removed"], purged["length"]) == (2, 0)
    assert not sync_redis.exists("failures:dead")


async def test_replay_never_writes_outside_the_stream_namespace(redis_url, sync_redis):
    """Regression: a dead letter's own _dlq_stream could point a replay at the object namespace."""
    poison(sync_redis, "obj:model:a", 1, dead="orders:dead")  # a crafted (or stale) dead letter
    poison(sync_redis, "orders", 1)
    async with connected(redis_url) as client:
        text = await call(client, "stream_dead_letter_replay", {"stream": "orders", "confirm": True}, error=True)
        assert "the stream a dead letter names (_dlq_stream)='obj:model:a' is in the object namespace" in text
        done = await call(
            client, "stream_dead_letter_replay", {"stream": "orders", "target": "orders", "confirm": True}
        )
        assert done["replayed"] == 2
    assert not sync_redis.exists("obj:model:a") and sync_redis.xlen("orders") == 2
