"""Operations through a real in-memory MCP client: all-or-nothing batches, consuming through a group,
group create/destroy, trimming; and read-only mode hiding what writes."""

from __future__ import annotations

import time

import anyio
import redis
from mcp import Client

from streammachine.mcp import build_server
from streammachine.mcp.server import WRITE_TOOLS
from tests.mcp.mcp_client import call, connected

BATCH = [{"n": i, "pad": "x" * 200} for i in range(9000)]


async def test_a_cancelled_batch_is_written_whole_or_not_at_all(redis_url, sync_redis):
    """The client gives up at points spread over the call: each batch is then entirely in Redis or entirely not."""
    server = build_server(redis_url=redis_url)
    async with Client(server) as client:
        await client.call_tool("stream_send_batch", {"stream": "warm-up", "messages": BATCH[:10]})
        durations = []
        for run in range(3):  # the quickest whole call: later ones given up at fractions of it are cut mid-way
            started = time.perf_counter()
            done = await client.call_tool("stream_send_batch", {"stream": f"timed-{run}", "messages": BATCH})
            durations.append(time.perf_counter() - started)
            assert not done.is_error
        full = min(durations)
    cancelled = 0
    for trial in range(12):
        stream = f"cancelled-{trial}"
        async with Client(server) as client:  # leaving the session joins the server's handler
            with anyio.move_on_after(full * (trial + 1) / 13) as scope:
                await client.call_tool("stream_send_batch", {"stream": stream, "messages": BATCH})
        cancelled += scope.cancelled_caught
        assert sync_redis.xlen(stream) in (0, len(BATCH)), f"trial {trial}: {sync_redis.xlen(stream)} written"
    await server.state.close()
    assert cancelled >= 3, "calls were given up before their result arrived"


async def test_a_batch_redis_refuses_midway_writes_nothing(private_server):
    """A value over the server's proto-max-bulk-len, 5500 records in: Redis drops the connection there."""
    sync = redis.Redis.from_url(private_server.url)
    sync.config_set("proto-max-bulk-len", 1024 * 1024)
    messages = [{"n": i} for i in range(6000)]
    messages[5500] = {"n": 5500, "blob": "b" * (1024 * 1024 + 10)}
    async with connected(private_server.url) as client:
        text = await call(client, "stream_send_batch", {"stream": "s", "messages": messages}, error=True)
        assert sync.exists("s") == 0, f"{sync.xlen('s')} of the batch written"
        assert "nothing was written" in text
        ok = await call(client, "stream_send_batch", {"stream": "s", "messages": messages[:5500]})
        assert ok["count"] == 5500 and sync.xlen("s") == 5500, "the server keeps serving"


async def test_consuming_through_a_group(redis_url, sync_redis):
    ids = [sync_redis.xadd("orders", {"n": i}) for i in range(5)]
    async with connected(redis_url) as client:
        assert "does not exist" in await call(
            client, "stream_group_create", {"stream": "nope", "group": "g"}, error=True
        )
        created = await call(client, "stream_group_create", {"stream": "orders", "group": "audit", "start_id": "0"})
        assert created["created"] is True
        again = await call(client, "stream_group_create", {"stream": "orders", "group": "audit", "start_id": "0"})
        assert again["created"] is False, "an existing group is left as it is"
        fresh = await call(client, "stream_group_create", {"stream": "new", "group": "g", "mkstream": True})
        assert fresh["created"] and sync_redis.xlen("new") == 0

        first = await call(client, "stream_group_read", {"stream": "orders", "group": "audit", "count": 2})
        assert [e["id"] for e in first["entries"]] == ids[:2] and first["consumer"] == "mcp"
        assert first["entries"][0]["fields"] == {"n": "0"}
        pending = await call(client, "stream_pending", {"stream": "orders", "group": "audit"})
        assert pending["per_consumer"] == {"mcp": 2}
        again = await call(client, "stream_group_read", {"stream": "orders", "group": "audit", "pending": True})
        assert [e["id"] for e in again["entries"]] == ids[:2], "pending entries come back until acked"
        acked = await call(client, "stream_group_ack", {"stream": "orders", "group": "audit", "ids": ids[:2]})
        assert acked["acked"] == 2
        assert (await call(client, "stream_pending", {"stream": "orders", "group": "audit"}))["pending"] == 0
        rest = await call(client, "stream_group_read", {"stream": "orders", "group": "audit", "consumer": "other"})
        assert [e["id"] for e in rest["entries"]] == ids[2:]
        assert "entry id" in await call(
            client, "stream_group_ack", {"stream": "orders", "group": "audit", "ids": ["+"]}, error=True
        )
        assert "no consumer group 'nope'" in await call(
            client, "stream_group_read", {"stream": "orders", "group": "nope"}, error=True
        )

        refused = await call(client, "stream_group_destroy", {"stream": "orders", "group": "audit"}, error=True)
        assert "2 consumer(s) and 3 pending entries" in refused and "confirm: true" in refused
        assert {g["name"] for g in sync_redis.xinfo_groups("orders")} == {"audit"}
        gone = await call(client, "stream_group_destroy", {"stream": "orders", "group": "audit", "confirm": True})
        assert gone == {"stream": "orders", "group": "audit", "destroyed": True, "dropped_pending": 3}
        assert sync_redis.xinfo_groups("orders") == [] and sync_redis.xlen("orders") == 5


async def test_moving_a_group_says_where_and_needs_confirmation(redis_url, sync_redis):
    ids = [sync_redis.xadd("orders", {"n": i}, id=f"{1_700_000_000_000 + i * 1000}-0") for i in range(5)]
    sync_redis.xgroup_create("orders", "billing", id="$")
    sync_redis.xreadgroup("billing", "c1", {"orders": ">"})  # nothing new: last delivered stays at the end
    async with connected(redis_url) as client:
        refused = await call(
            client, "stream_group_reset", {"stream": "orders", "group": "billing", "to": "start"}, error=True
        )
        assert f"(last delivered {ids[-1]}) to the first entry" in refused and "confirm: true" in refused
        moved = await call(
            client, "stream_group_reset", {"stream": "orders", "group": "billing", "to": "start", "confirm": True}
        )
        assert (moved["was"], moved["now"], moved["next_id"]) == (ids[-1], "0-0", ids[0])
        read = await call(client, "stream_group_read", {"stream": "orders", "group": "billing", "count": 10})
        assert [e["id"] for e in read["entries"]] == ids, "everything is read again"

        to_third = {"stream": "orders", "group": "billing", "to": ids[2], "drop_pending": True}
        assert "acknowledge its 5 pending entries" in await call(client, "stream_group_reset", to_third, error=True)
        moved = await call(client, "stream_group_reset", {**to_third, "confirm": True})
        assert (moved["next_id"], moved["dropped_pending"], moved["pending"]) == (ids[2], 5, 0)
        read = await call(client, "stream_group_read", {"stream": "orders", "group": "billing"})
        assert [e["id"] for e in read["entries"]] == ids[2:]

        seconds = {"stream": "orders", "group": "billing", "to": "1700000002", "confirm": True}
        assert "looks like a time in seconds" in await call(client, "stream_group_reset", seconds, error=True)
        assert "expected start, end" in await call(
            client, "stream_group_reset", {**seconds, "to": "yesterday"}, error=True
        )
        assert "no consumer group 'nope'" in await call(
            client, "stream_group_reset", {**seconds, "group": "nope", "to": "end"}, error=True
        )
    assert sync_redis.xinfo_groups("orders")[0]["last-delivered-id"] == ids[-1]


async def test_trimming_says_what_it_would_delete_and_needs_confirmation(redis_url, sync_redis):
    ids = [sync_redis.xadd("ticks", {"n": i}, id=f"{1_700_000_000_000 + i}-0") for i in range(10)]
    async with connected(redis_url) as client:
        assert "would delete 7 of 10 entries" in await call(
            client, "stream_trim", {"stream": "ticks", "maxlen": 3}, error=True
        )
        assert "would delete 4 of 10 entries" in await call(
            client, "stream_trim", {"stream": "ticks", "minid": ids[4]}, error=True
        )
        assert "exactly one of maxlen" in await call(
            client, "stream_trim", {"stream": "ticks", "maxlen": 3, "minid": ids[4], "confirm": True}, error=True
        )
        assert sync_redis.xlen("ticks") == 10
        trimmed = await call(client, "stream_trim", {"stream": "ticks", "minid": ids[4], "confirm": True})
        assert (trimmed["removed"], trimmed["length"]) == (4, 6)
        trimmed = await call(client, "stream_trim", {"stream": "ticks", "maxlen": 2, "confirm": True})
        assert (trimmed["removed"], trimmed["length"]) == (4, 2)
        assert [i for i, _ in sync_redis.xrange("ticks")] == ids[-2:]


async def test_read_only_mode_hides_every_tool_that_writes(redis_url, sync_redis):
    sync_redis.xadd("s", {"a": "1"})
    sync_redis.xgroup_create("s", "g", id="0")
    async with connected(redis_url, read_only=True) as client:
        names = {tool.name for tool in (await client.list_tools()).tools}
        assert not names & WRITE_TOOLS
        assert {
            "stream_group_read",
            "stream_group_ack",
            "stream_trim",
            "stream_group_destroy",
            "stream_group_reset",
            "stream_dead_letter_replay",
            "stream_dead_letter_purge",
        } <= (WRITE_TOOLS)
        assert "Unknown tool" in await call(client, "stream_group_read", {"stream": "s", "group": "g"}, error=True)
    assert sync_redis.xinfo_groups("s")[0]["pending"] == 0
