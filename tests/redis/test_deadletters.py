"""Dead letters (streammachine.redis.deadletters): list, show, replay, purge on real servers.

Replay moves each dead letter back to its stream in one step where both keys share a slot (a Lua script that
checks the dead letter is still there), and with a dedupe key across cluster slots: every entry arrives once.
"""

from __future__ import annotations

import asyncio
import sys

import pytest
import redis
import redis.asyncio as aioredis

from streammachine import ConsumerConfig
from streammachine.redis import deadletters as dlq
from streammachine.redis.deadletters_move import REPLAY_OF, marks_key
from streammachine.redis.inspect import NotAStream
from tests.engine import test_stage_cross_slot
from tests.helpers import wait_until


def poison(sync_redis, stream: str, n: int, start: int = 0, dead: str | None = None, **extra) -> list:
    """``n`` dead letters of ``stream`` (in ``dead``, default its own) as an agent writes them; their ids."""
    ids = []
    for i in range(start, start + n):
        record = dlq.dead_letter_record(
            {"i": str(i), **extra},
            stream=stream,
            group="g",
            entry_id=f"{1000 + i}-0",
            agent="worker",
            error="ValueError: poison",
            deliveries=3,
        )
        ids.append(sync_redis.xadd(dead or dlq.dead_letter_stream_of(stream), record))
    return ids


def test_record_format_round_trips_the_original_fields():
    """A record's own _dlq_* fields are kept as _orig_dlq_*; replay restores them under their own names."""
    fields = {b"i": b"1", b"_dlq_error": b"an earlier failure", "_dlq_replay_of": "x:dead/1-0"}
    record = dlq.dead_letter_record(
        fields, stream="s", group="g", entry_id="5-0", agent="a", error="E" * 5000, deliveries=2
    )
    assert record[b"_orig_dlq_error"] == b"an earlier failure" and record[b"_dlq_error"] == "E" * 4000
    assert record[b"_dlq_stream"] == "s" and record[b"_dlq_deliveries"] == 2
    assert dlq.original_fields(record) == {
        b"i": b"1",
        b"_dlq_error": b"an earlier failure",
        **{REPLAY_OF: "x:dead/1-0"},
    }


def test_stream_names_and_ids():
    assert dlq.dead_letter_stream_of("orders") == "orders:dead"
    assert dlq.dead_letter_stream_of("orders:dead") == "orders:dead"
    assert dlq.dead_letter_stream_of("{t}") == "{t}:dead"
    assert dlq.dead_letter_stream_of("orders", "failures") == "failures"
    assert dlq.checked_id("id", "1700000000000") == "1700000000000-0"
    for bad in ("abc", "1-2-3", "", None, True, 1.5):
        with pytest.raises(ValueError, match="expected a stream id"):
            dlq.checked_id("id", bad)
    with pytest.raises(ValueError, match="stream=''"):
        dlq.dead_letter_stream_of("")
    assert marks_key("orders:dead") == "{orders:dead}:replaying" and marks_key("{o}:dead") == "{o}:dead:replaying"
    with pytest.raises(ValueError, match="braces"):
        marks_key("a}b:dead")


async def test_list_show_and_page(redis_url, sync_redis):
    ids = poison(sync_redis, "orders", 5, extra="x")
    client = aioredis.Redis.from_url(redis_url)
    try:
        page = await dlq.list_dead_letters(client, "orders", count=2)
        assert [d.id for d in page] == ids[:2]
        first = page[0]
        assert (first.stream, first.original_id, first.agent, first.group) == ("orders", "1000-0", "worker", "g")
        assert (first.error, first.deliveries, first.fields) == ("ValueError: poison", 3, {"i": "0", "extra": "x"})
        assert first.time is not None and first.dead_letter_stream == "orders:dead"
        rest = await dlq.list_dead_letters(client, "orders:dead", start="(" + page[-1].id, count=10)
        assert [d.id for d in rest] == ids[2:]
        assert await dlq.show_dead_letter(client, "orders", ids[3]) == rest[1]
        assert await dlq.show_dead_letter(client, "orders", "1-0") is None
        assert await dlq.count_dead_letters(client, "orders") == 5
        assert await dlq.list_dead_letters(client, "nothing-here") == []
        with pytest.raises(ValueError, match="count=0"):
            await dlq.list_dead_letters(client, "orders", count=0)
    finally:
        await client.aclose()


async def test_replay_ids_then_all_moves_each_entry_once(redis_url, sync_redis):
    ids = poison(sync_redis, "orders", 6)
    client = aioredis.Redis.from_url(redis_url)
    try:
        result = await dlq.replay_dead_letters(client, "orders", [ids[1], ids[4]])
        assert [r.dead_letter_id for r in result.replayed] == [ids[1], ids[4]] and result.atomic
        assert [f["i"] for _, f in sync_redis.xrange("orders")] == ["1", "4"]
        rest = await dlq.replay_dead_letters(client, "orders")
        assert rest.count == 4 and not rest.missing
        assert sorted(f["i"] for _, f in sync_redis.xrange("orders")) == ["0", "1", "2", "3", "4", "5"]
        assert sync_redis.xlen("orders:dead") == 0
        assert not any(k.startswith("_dlq_") for _, f in sync_redis.xrange("orders") for k in f)
        assert (await dlq.replay_dead_letters(client, "orders")).count == 0  # nothing left: nothing to do
    finally:
        await client.aclose()


async def test_replay_to_target_and_sync_client(redis_url, sync_redis):
    ids = poison(sync_redis, "orders", 3)
    plain = redis.Redis.from_url(redis_url)  # the CLI's and the magics' kind of client
    try:
        result = dlq.replay_dead_letters_sync(plain, "orders", ids[:2], target="orders-retry")
        assert {r.stream for r in result.replayed} == {"orders-retry"} and sync_redis.xlen("orders-retry") == 2
        assert [d.id for d in dlq.list_dead_letters_sync(plain, "orders")] == ids[2:]
        assert dlq.purge_dead_letters_sync(plain, "orders") == 1
    finally:
        plain.close()


async def test_bad_input_is_refused_and_changes_nothing(redis_url, sync_redis):
    ids = poison(sync_redis, "orders", 2)
    sync_redis.hset("hashy:dead", "a", "1")
    sync_redis.hset("taken", "a", "1")
    client = aioredis.Redis.from_url(redis_url)
    try:
        with pytest.raises(dlq.UnknownDeadLetter, match=r"'orders:dead' has no entry 1-0 \(nothing was changed\)"):
            await dlq.replay_dead_letters(client, "orders", [ids[0], "1-0"])
        with pytest.raises(dlq.UnknownDeadLetter, match="no entry 2-0"):
            await dlq.purge_dead_letters(client, "orders", ["2-0", ids[1]])
        with pytest.raises(ValueError, match="ids='nope'"):
            await dlq.replay_dead_letters(client, "orders", ["nope"])
        with pytest.raises(ValueError, match="ids=\\[\\]"):
            await dlq.replay_dead_letters(client, "orders", [])
        with pytest.raises(ValueError, match="not both"):
            await dlq.purge_dead_letters(client, "orders", [ids[0]], before=ids[1])
        with pytest.raises(NotAStream, match="'hashy:dead' is a Redis hash"):
            await dlq.list_dead_letters(client, "hashy")
        with pytest.raises(NotAStream, match="'hashy:dead' is a Redis hash"):
            await dlq.replay_dead_letters(client, "hashy")
        with pytest.raises(NotAStream, match="cannot replay into 'taken'.*hash"):
            await dlq.replay_dead_letters(client, "orders", target="taken")
        assert sync_redis.xlen("orders:dead") == 2 and not sync_redis.exists("orders")
        sync_redis.xadd("odd:dead", {"a": "1"})  # not a dead letter: no _dlq_stream to send it back to
        with pytest.raises(ValueError, match="names no stream.*target="):
            await dlq.replay_dead_letters(client, "odd")
        assert (await dlq.replay_dead_letters(client, "odd", target="odd")).count == 1
    finally:
        await client.aclose()


async def test_concurrent_replays_never_double(redis_url, sync_redis):
    """Two replays (and a purge) racing over the same dead letters: each entry ends up in the stream once."""
    poison(sync_redis, "race", 300)
    clients = [aioredis.Redis.from_url(redis_url) for _ in range(3)]
    try:
        results = await asyncio.gather(
            dlq.replay_dead_letters(clients[0], "race", chunk=7),
            dlq.replay_dead_letters(clients[1], "race", chunk=11),
            dlq.replay_dead_letters(clients[2], "race", chunk=13),
        )
    finally:
        for client in clients:
            await client.aclose()
    values = [f["i"] for _, f in sync_redis.xrange("race")]
    assert sorted(values, key=int) == [str(i) for i in range(300)], "every entry exactly once"
    assert sum(r.count for r in results) == 300 and sync_redis.xlen("race:dead") == 0


async def test_large_records_go_in_several_script_calls(redis_url, sync_redis, monkeypatch):
    monkeypatch.setattr(dlq, "REPLAY_BYTES", 3000)
    poison(sync_redis, "big", 10, blob="x" * 1000)
    client = aioredis.Redis.from_url(redis_url)
    try:
        assert (await dlq.replay_dead_letters(client, "big")).count == 10
    finally:
        await client.aclose()
    assert sorted(int(f["i"]) for _, f in sync_redis.xrange("big")) == list(range(10))


async def test_an_entry_wider_than_a_script_takes_is_replayed_too(redis_url, sync_redis):
    """Regression: a record of 5000 fields made the replay script fail (Lua's unpack limit)."""
    poison(sync_redis, "wide", 1, **{f"f{n}": str(n) for n in range(5000)})
    poison(sync_redis, "wide", 1, start=1)
    client = aioredis.Redis.from_url(redis_url)
    try:
        assert (await dlq.replay_dead_letters(client, "wide")).count == 2
    finally:
        await client.aclose()
    rows = sorted(sync_redis.xrange("wide"), key=lambda row: row[1]["i"])
    assert [len(fields) for _, fields in rows] == [5001, 1] and sync_redis.xlen("wide:dead") == 0


async def test_purge_by_ids_before_and_all(redis_url, sync_redis):
    ids = poison(sync_redis, "p", 6)
    sync_redis.xgroup_create("p:dead", "auditors", id="0")
    client = aioredis.Redis.from_url(redis_url)
    try:
        assert await dlq.purge_dead_letters(client, "p", [ids[0], ids[5]]) == 2
        assert await dlq.purge_dead_letters(client, "p", before=ids[3]) == 2  # ids[1], ids[2]
        assert [d.id for d in await dlq.list_dead_letters(client, "p")] == ids[3:5]
        assert await dlq.purge_dead_letters(client, "p") == 2
        assert sync_redis.xlen("p:dead") == 0
        assert sync_redis.xinfo_groups("p:dead"), "the key (and a group reading it) stays"
    finally:
        await client.aclose()


async def test_replay_trims_as_every_send(redis_url, sync_redis, monkeypatch):
    """STREAMMACHINE_STREAM_MAXLEN applies to replayed entries (MAXLEN ~, through producer.xadd_options)."""
    monkeypatch.setenv("STREAMMACHINE_STREAM_MAXLEN", "5")
    assert dlq.trim_options() == ("MAXLEN", "~", 5, "*")
    assert dlq.trim_options(maxlen=None) == ("*",)
    sync_redis.config_set("stream-node-max-entries", 2)  # small nodes: '~' then trims close to 5
    try:
        poison(sync_redis, "trimmed", 40)
        client = aioredis.Redis.from_url(redis_url)
        try:
            assert (await dlq.replay_dead_letters(client, "trimmed")).count == 40
        finally:
            await client.aclose()
        assert sync_redis.xlen("trimmed") <= 7
    finally:
        sync_redis.config_set("stream-node-max-entries", 100)


async def test_dead_lettered_by_an_agent_then_replayed_after_a_hot_swap(app_factory, sync_redis):
    """DLQ replay end to end: poison entries dead-lettered, the handler fixed, replayed: each handled once."""
    app = app_factory(consumer_config=ConsumerConfig(count=50, block_ms=100, retry_delay_ms=20, max_deliveries=2))
    handled: list = []

    @app.agent("payments", group="book", name="book")
    async def broken(message):
        if int(message.message["n"]) % 3 == 0:
            raise ValueError(f"cannot book {message.message['n']}")
        handled.append(message.message["n"])

    await app.startup()
    await app.send_batch("payments", [{"n": n} for n in range(30)])
    await wait_until(lambda: sync_redis.xlen("payments:dead") == 10, what="the 10 poison entries dead-lettered")
    letters = dlq.list_dead_letters_sync(sync_redis, "payments")
    assert {d.error for d in letters} == {f"ValueError: cannot book {n}" for n in range(0, 30, 3)}
    assert {d.agent for d in letters} == {"book"} and {d.deliveries for d in letters} == {2}

    @app.agent("payments", group="book", name="book")
    async def fixed(message):
        handled.append(message.message["n"])

    await wait_until(lambda: app.last_swap_ms is not None, what="the fixed handler swapped in")
    # half from the CLI, in another process; the rest from the core, while the agent runs
    cli = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "streammachine",
        "--redis-url",
        app.redis.url,
        "dlq",
        "replay",
        "payments",
        *[d.id for d in letters[:5]],
        "--yes",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(cli.communicate(), 60)
    assert cli.returncode == 0, err
    assert out.decode().strip() == "replayed 5 dead letter(s) from payments:dead: 5 to payments"
    result = await dlq.replay_dead_letters(await app.redis.get_client(), "payments")
    assert result.count == 5 and result.atomic
    await wait_until(lambda: len(handled) == 30, what="every entry handled")
    assert sorted(handled, key=int) == [str(n) for n in range(30)], "each entry handled exactly once"
    assert sync_redis.xlen("payments:dead") == 0


# --- on a cluster ------------------------------------------------------------------------------------------------

# a LocalCluster of 3 masters for this module, and a sync client on it after a FLUSHALL (shared fixtures)
cluster, sync_cluster = test_stage_cross_slot.cluster, test_stage_cross_slot.sync_cluster


@pytest.mark.cluster
@pytest.mark.timeout(120)
async def test_replay_on_a_cluster_same_slot_and_cross_slot(cluster, sync_cluster):
    from redis.asyncio.cluster import RedisCluster

    tagged, plain = poison(sync_cluster, "{orders}", 5), poison(sync_cluster, "orders", 5)
    client = RedisCluster.from_url(cluster.url.replace("redis+cluster://", "redis://"))
    try:
        same = await dlq.replay_dead_letters(client, "{orders}")
        assert same.atomic and same.count == 5 and sync_cluster.xlen("{orders}:dead") == 0
        across = await dlq.replay_dead_letters(client, "orders", plain[:2])
        assert not across.atomic and across.count == 2
        rows = sync_cluster.xrange("orders")
        assert [(f["i"], f[REPLAY_OF.decode()]) for _, f in rows] == [
            ("0", f"orders:dead/{plain[0]}"),
            ("1", f"orders:dead/{plain[1]}"),
        ]
        assert (await dlq.replay_dead_letters(client, "orders")).count == 3
        assert sync_cluster.xlen("orders") == 5 and sync_cluster.xlen("orders:dead") == 0
        assert not sync_cluster.exists(marks_key("orders:dead")), "no replay marks left behind"
    finally:
        await client.aclose()


@pytest.mark.cluster
@pytest.mark.timeout(120)
async def test_concurrent_cross_slot_replays_never_double(cluster, sync_cluster):
    from redis.asyncio.cluster import RedisCluster

    poison(sync_cluster, "racing", 60)
    url = cluster.url.replace("redis+cluster://", "redis://")
    clients = [RedisCluster.from_url(url) for _ in range(3)]
    try:
        results = await asyncio.gather(*(dlq.replay_dead_letters(c, "racing", chunk=7) for c in clients))
        leftovers = await dlq.replay_dead_letters(clients[0], "racing")  # what was busy: its marks are gone now
    finally:
        for client in clients:
            await client.aclose()
    assert sorted(int(f["i"]) for _, f in sync_cluster.xrange("racing")) == list(range(60)), "each once"
    assert sum(r.count for r in results) + leftovers.count == 60 and sync_cluster.xlen("racing:dead") == 0


@pytest.mark.cluster
@pytest.mark.timeout(120)
async def test_cross_slot_replay_cut_before_its_xdel_is_finished_once(cluster, sync_cluster):
    """A replay that died after its XADD, before its XDEL: the next one deletes the dead letter, sends nothing."""
    from redis.asyncio.cluster import RedisCluster

    ids = poison(sync_cluster, "cut", 3)
    since = "0-0"
    # what the dead replay left: its marks (an hour old), and the first two entries already in the stream
    for dead_id in ids:
        sync_cluster.hset(marks_key("cut:dead"), dead_id, f"{since}|{1}")
    for dead_id, (_, fields) in zip(ids[:2], sync_cluster.xrange("cut:dead")):
        sync_cluster.xadd("cut", {**dlq.original_fields(fields), REPLAY_OF: f"cut:dead/{dead_id}"})
    sync_cluster.xadd("cut", {"unrelated": "1"})
    client = RedisCluster.from_url(cluster.url.replace("redis+cluster://", "redis://"))
    try:
        result = await dlq.replay_dead_letters(client, "cut")
    finally:
        await client.aclose()
    assert result.count == 3 and not result.busy
    assert sorted(f["i"] for _, f in sync_cluster.xrange("cut") if "i" in f) == ["0", "1", "2"], "none doubled"
    assert sync_cluster.xlen("cut:dead") == 0 and not sync_cluster.exists(marks_key("cut:dead"))

    fresh = poison(sync_cluster, "cut", 1, start=9)
    sync_cluster.hset(marks_key("cut:dead"), fresh[0], f"0-0|{int(sync_cluster.time()[0]) * 1000}")
    client = RedisCluster.from_url(cluster.url.replace("redis+cluster://", "redis://"))
    try:
        busy = await dlq.replay_dead_letters(client, "cut")
    finally:
        await client.aclose()
    assert busy.busy == fresh and busy.count == 0 and sync_cluster.xlen("cut:dead") == 1


@pytest.mark.cluster
@pytest.mark.timeout(120)
def test_cli_replays_on_a_cluster_across_slots(cluster, sync_cluster, capsys):
    from streammachine.cli import main

    ids = poison(sync_cluster, "clustered", 3)
    assert main(["--redis-url", cluster.url, "dlq", "list", "clustered"]) == 0
    assert [line.split()[0] for line in capsys.readouterr().out.splitlines()] == ids
    assert main(["--redis-url", cluster.url, "dlq", "replay", "clustered", "--all", "--yes"]) == 0
    out = capsys.readouterr().out
    assert "replayed 3 dead letter(s) from clustered:dead: 3 to clustered" in out and "_dlq_replay_of" in out
    assert sync_cluster.xlen("clustered") == 3 and sync_cluster.xlen("clustered:dead") == 0
