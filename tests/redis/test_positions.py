"""Consumer-group positions (XGROUP SETID), group list/delete, trimming and MINID retention, on a real server."""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import datetime, timezone

import pytest
import redis

from streammachine import App
from streammachine.redis import positions


def setup_stream(client, n: int = 5, base: int = 1000) -> None:
    for i in range(n):
        client.xadd("s", {"i": i}, id=f"{base + i}-0")
    client.xadd("s", {"i": "tie"}, id=f"{base + n - 1}-1")
    client.xgroup_create("s", "g", id="$")


def next_ids(client, group: str = "g", count: int = 10) -> list:
    reply = client.xreadgroup(group, "reader", {"s": ">"}, count=count)
    return [entry_id for _, entries in reply for entry_id, _ in entries]


def test_parse_position_forms():
    assert positions.parse_position("start") == ("start", "0-0", None)
    assert positions.parse_position("end") == ("end", "$", None)
    assert positions.parse_position("1700000000000-5") == ("id", "1700000000000-4", "1700000000000-5")
    assert positions.parse_position("1700000000000") == ("id", "1699999999999-18446744073709551615", "1700000000000-0")
    assert positions.parse_position("1970-01-01T00:00:01.003Z").first == "1003-0"
    assert positions.parse_position("1970-01-01 00:00:01").first == "1000-0", "a time without a zone is UTC"
    assert positions.parse_position(datetime(1970, 1, 1, 0, 0, 2, tzinfo=timezone.utc)).first == "2000-0"
    now = 10_000.0
    assert positions.parse_position("90s ago", now=now).first == "9910000-0"
    assert positions.parse_position("-2m", now=now).first == "9880000-0"
    with pytest.raises(ValueError, match="expected start, end, a stream id"):
        positions.parse_position("yesterday")


def test_reset_to_an_id_a_time_start_and_end(sync_redis):
    setup_stream(sync_redis)
    assert next_ids(sync_redis) == []  # created at $: nothing yet
    result = positions.reset_group_sync(sync_redis, "s", "g", "1002-0")
    assert result["next_id"] == "1002-0" and result["was"] == "1004-1"
    assert next_ids(sync_redis) == ["1002-0", "1003-0", "1004-0", "1004-1"], "inclusive, ties in order"
    positions.reset_group_sync(sync_redis, "s", "g", "1970-01-01T00:00:01.004Z")
    assert next_ids(sync_redis) == ["1004-0", "1004-1"], "a time: the first entry at or after it"
    positions.reset_group_sync(sync_redis, "s", "g", "1004-1")
    assert next_ids(sync_redis) == ["1004-1"]
    result = positions.reset_group_sync(sync_redis, "s", "g", "start")
    assert result["lag"] == 6 and result["next_id"] == "1000-0"
    assert len(next_ids(sync_redis)) == 6
    positions.reset_group_sync(sync_redis, "s", "g", "end")
    sync_redis.xadd("s", {"i": "new"}, id="2000-0")
    assert next_ids(sync_redis) == ["2000-0"]


def test_reset_keeps_or_drops_pending(sync_redis):
    setup_stream(sync_redis)
    positions.reset_group_sync(sync_redis, "s", "g", "start")
    next_ids(sync_redis, count=3)  # three delivered, never acknowledged
    kept = positions.reset_group_sync(sync_redis, "s", "g", "end")
    assert kept["pending"] == 3 and kept["dropped_pending"] == 0
    dropped = positions.reset_group_sync(sync_redis, "s", "g", "end", drop_pending=True)
    assert dropped["pending"] == 0 and dropped["dropped_pending"] == 3


def test_missing_stream_or_group_is_a_clear_error(sync_redis):
    setup_stream(sync_redis)
    with pytest.raises(KeyError, match="no consumer group 'nope' \\(groups: 'g'\\)"):
        positions.reset_group_sync(sync_redis, "s", "nope", "start")
    with pytest.raises(KeyError, match="stream 'missing' does not exist"):
        positions.list_groups_sync(sync_redis, "missing")


async def test_async_forms_list_reset_delete(redis_url, sync_redis):
    setup_stream(sync_redis)
    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        (row,) = await positions.list_groups(client, "s")
        assert row["name"] == "g" and row["last_delivered_id"] == "1004-1" and row["pending"] == 0
        result = await positions.reset_group(client, "s", "g", "1001")
        assert result["next_id"] == "1001-0"
        assert await positions.delete_group(client, "s", "g") is True
        assert await positions.list_groups(client, "s") == []
        with pytest.raises(KeyError):
            await positions.delete_group(client, "s", "g")
    finally:
        await client.aclose()


def test_trim_by_length_id_and_age(sync_redis):
    setup_stream(sync_redis)
    assert positions.trim_sync(sync_redis, "s", minid="1002", exact=True) == 2
    assert sync_redis.xrange("s")[0][0] == "1002-0"
    assert positions.trim_sync(sync_redis, "s", maxlen=2, exact=True) == 2
    now_ms = int(time.time() * 1000)
    sync_redis.xadd("s", {"i": "old"}, id=f"{now_ms - 60_000}-0")
    sync_redis.xadd("s", {"i": "young"}, id=f"{now_ms}-0")
    assert positions.trim_sync(sync_redis, "s", max_age=30, exact=True) == 3
    assert [f["i"] for _, f in sync_redis.xrange("s")] == ["young"]
    with pytest.raises(ValueError, match="exactly one of"):
        positions.trim_sync(sync_redis, "s", maxlen=1, max_age=3)


async def test_sends_with_max_age_trim_old_entries(redis_url, sync_redis):
    old_ms = int(time.time() * 1000) - 3_600_000
    pipe = sync_redis.pipeline()
    for i in range(1000):  # ten radix-tree nodes (100 entries each) of hour-old entries
        pipe.xadd("events", {"i": i}, id=f"{old_ms + i}-0")
    pipe.execute()
    app = App("retention", redis_url=redis_url, stream_max_age=60)
    try:
        await app.send("events", {"i": "now"})
        await app.send_batch("events", [{"i": "a"}, {"i": "b"}])
    finally:
        await app.shutdown()
    # MINID ~ drops whole nodes of old entries: at most the last partial node of them may remain
    remaining = [f["i"] for _, f in sync_redis.xrange("events")]
    assert remaining[-3:] == ["now", "a", "b"] and len(remaining) <= 103
    with pytest.raises(ValueError, match="choose one"):
        App("both", redis_url=redis_url, stream_maxlen=10, stream_max_age=60)


def test_max_age_from_the_environment(monkeypatch):
    monkeypatch.setenv("STREAMMACHINE_STREAM_MAX_AGE", "90")
    app = App("env")
    assert app.config.stream_max_age == 90.0 and app.config.stream_maxlen is None
    assert App("arg", stream_maxlen=5).config.stream_max_age is None, "an argument replaces the environment's rule"
    monkeypatch.setenv("STREAMMACHINE_STREAM_MAX_AGE", "soon")
    with pytest.raises(ValueError, match="STREAMMACHINE_STREAM_MAX_AGE='soon': expected seconds > 0"):
        App("bad")


def cli(redis_url: str, *args: str, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "streammachine", *args, "--redis-url", redis_url],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_group_reset_asks_and_yes_skips_the_question(redis_url, sync_redis):
    setup_stream(sync_redis)
    declined = cli(redis_url, "group", "reset", "s", "g", "--to", "start", stdin="n\n")
    assert declined.returncode == 1 and "[y/N]" in declined.stderr and "nothing changed" in declined.stderr
    assert sync_redis.xinfo_groups("s")[0]["last-delivered-id"] == "1004-1"
    no_answer = cli(redis_url, "group", "reset", "s", "g", "--to", "start")
    assert no_answer.returncode == 1, "no terminal, no answer: nothing is done"
    accepted = cli(redis_url, "group", "reset", "s", "g", "--to", "1003", stdin="y\n")
    assert accepted.returncode == 0, accepted.stderr
    assert "next entry 1003-0" in accepted.stdout
    assert sync_redis.xinfo_groups("s")[0]["last-delivered-id"] == "1002-18446744073709551615"
    assert cli(redis_url, "group", "reset", "s", "g", "--to=-1h", "--yes").returncode == 0
    an_hour_ago = int(time.time() * 1000) - 3_600_000
    listing = cli(redis_url, "group", "list", "s")
    assert listing.returncode == 0 and listing.stdout.startswith("g: consumers 0, pending 0, last delivered ")
    delivered = int(sync_redis.xinfo_groups("s")[0]["last-delivered-id"].split("-")[0])
    assert abs(delivered - an_hour_ago) < 120_000, "the group waits for entries of the last hour"
    bad = cli(redis_url, "group", "reset", "s", "nope", "--to", "end", "--yes")
    assert bad.returncode == 1 and "no consumer group 'nope'" in bad.stderr
    assert cli(redis_url, "group", "delete", "s", "g", "--yes").returncode == 0
    assert sync_redis.xinfo_groups("s") == []


def test_cli_trim(redis_url, sync_redis):
    setup_stream(sync_redis)
    done = cli(redis_url, "trim", "s", "--maxlen", "2", "--exact", "--yes")
    assert done.returncode == 0 and "trimmed 4 entries from s; 2 left" in done.stdout
    assert cli(redis_url, "trim", "s", "--minid", "x1", "--yes").returncode == 1
    assert cli(redis_url, "trim", "missing", "--maxlen", "1", "--yes").returncode == 1
    assert cli(redis_url, "trim", "s", "--maxlen", "1", "--max-age", "5").returncode == 2, "one rule at a time"
