"""Stages: handler outputs and table changes committed with the ack, one atomic commit per read."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from collections import Counter

import pytest
import redis.asyncio as aioredis

from streammachine import ConsumerConfig, Emit
from streammachine.engine.commit import SCRIPT, CommitPlan
from streammachine.engine.effects import ReadEffects, current_unit
from streammachine.redis.transport import Transport
from streammachine.state.table import Table
from tests.helpers import wait_until


def outputs(sync_redis, stream: str) -> list:
    return [fields for _, fields in sync_redis.xrange(stream)]


async def test_return_value_routing(app_factory, sync_redis):
    app = app_factory()

    @app.agent("in", group="g", output="out")
    async def stage(message):
        n = int(message.message["n"])
        if n == 0:
            return None  # nothing
        if n == 1:
            return {"n": n}  # one record to output=
        if n == 2:
            return [{"n": n, "i": 0}, {"n": n, "i": 1}]  # several
        return [{"n": n}, Emit("audit", {"n": n, "kind": "emit"})]  # output= and another stream

    await app.startup()
    await app.send_batch("in", [{"n": i} for i in range(4)])
    await wait_until(lambda: len(outputs(sync_redis, "out")) == 4 and sync_redis.xlen("audit") == 1, what="outputs")
    assert [f["n"] for f in outputs(sync_redis, "out")] == ["1", "2", "2", "3"]
    assert outputs(sync_redis, "audit") == [{"n": "3", "kind": "emit"}]
    assert sync_redis.xpending("in", "g")["pending"] == 0


async def test_batch_agent_returns_records_for_the_whole_read(app_factory, sync_redis):
    app = app_factory(consumer_config=ConsumerConfig(count=50, block_ms=100))
    totals = app.table("batch_totals", default=0)

    @app.agent("ticks", group="g", output="sums", tables=[totals], batch=True)
    async def summarise(messages):
        total = sum(int(m.message["qty"]) for m in messages)
        totals["qty"] += total
        return {"entries": len(messages), "qty": total}

    await app.startup()
    await app.send_batch("ticks", [{"qty": i} for i in range(120)])
    await wait_until(lambda: totals.get("qty") == sum(range(120)), what="all ticks summed")
    rows = outputs(sync_redis, "sums")
    assert sum(int(r["entries"]) for r in rows) == 120
    assert sum(int(r["qty"]) for r in rows) == sum(range(120))


async def test_failing_handler_mid_read_commits_the_others_once(app_factory, sync_redis):
    """Entry 5 writes to the table, then raises: its write is discarded, the other 9 commit once."""
    app = app_factory(consumer_config=ConsumerConfig(count=100, block_ms=100, on_error="dead_letter", start_id="0"))
    totals = app.table("mid_read", default=0)

    @app.agent("in", group="g", output="out", tables=[totals])
    async def stage(message):
        n = int(message.message["n"])
        totals["sum"] += n
        if n == 5:
            raise ValueError("poison")
        return {"n": n}

    await app.send_batch("in", [{"n": i} for i in range(10)])  # one read holds all ten
    await app.startup()
    await wait_until(lambda: sync_redis.xlen("in:dead") == 1 and sync_redis.xlen("out") == 9, what="committed")
    await wait_until(lambda: sync_redis.xpending("in", "g")["pending"] == 0, what="all acked")
    assert sorted(int(f["n"]) for f in outputs(sync_redis, "out")) == [0, 1, 2, 3, 4, 6, 7, 8, 9]
    await wait_until(lambda: totals["sum"] == sum(range(10)) - 5, what="the commit's outcome applied locally")
    stored = sync_redis.hget("streammachine:table:mid_read", "sum")
    assert stored.split("|")[-1] == "40"


async def test_returning_a_record_without_output_stream_fails_clearly(app_factory, sync_redis):
    app = app_factory(consumer_config=ConsumerConfig(count=10, block_ms=100, on_error="dead_letter"))
    seen = app.table("seen", default=0)

    @app.agent("in", group="g", tables=[seen])
    async def stage(message):
        seen["n"] += 1
        return {"oops": 1}

    await app.startup()
    await app.send("in", {"x": 1})
    await wait_until(lambda: sync_redis.xlen("in:dead") == 1, what="dead-lettered")
    error = outputs(sync_redis, "in:dead")[0]["_dlq_error"]
    assert "output=" in error and "Emit" in error
    assert seen.get("n") is None  # the failed unit's write never committed


async def test_table_restored_by_a_new_app_and_counting_continues(app_factory, redis_url):
    first = app_factory("first")
    counts = first.table("counts", default=0)

    @first.agent("clicks", group="g", tables=[counts])
    async def count(message):
        counts[message.message["page"]] += 1

    await first.startup()
    await first.send_batch("clicks", [{"page": p} for p in "aab"])
    await wait_until(lambda: counts.get("a") == 2 and counts.get("b") == 1, what="first counts")
    await first.shutdown()

    second = app_factory("second")
    again = second.table("counts", default=0)

    @second.agent("clicks", group="g", tables=[again])
    async def count_again(message):
        again[message.message["page"]] += 1

    await second.startup()
    assert again.to_dict() == {"a": 2, "b": 1}  # loaded before the first entry is handled
    await second.send_batch("clicks", [{"page": p} for p in "abc"])
    await wait_until(lambda: again.get("c") == 1, what="second counts")
    assert again.to_dict() == {"a": 3, "b": 2, "c": 1}


async def test_two_apps_sharing_a_hot_key_count_exactly(app_factory, sync_redis):
    """Two processes' worth of consumers (separate in-memory tables) increment one key: the version check
    makes a commit on stale state fail and redo, so the total is exact."""
    apps, tables = [], []
    for name in ("left", "right"):
        app = app_factory(name, consumer_config=ConsumerConfig(count=5, block_ms=50))
        table = app.table("hot", default=0)

        @app.agent("hits", group="g", output="hits:out", tables=[table], concurrency=2, name="hit")
        async def hit(message, table=table):
            table["total"] += int(message.message["n"])
            await asyncio.sleep(0)  # let the other consumers interleave
            return {"n": message.message["n"]}

        apps.append(app)
        tables.append(table)
    for app in apps:
        await app.startup()
    await apps[0].send_batch("hits", [{"n": i} for i in range(400)])
    expected = sum(range(400))
    await wait_until(lambda: sync_redis.xlen("hits:out") == 400, 30, what="400 outputs")
    await wait_until(lambda: sync_redis.xpending("hits", "g")["pending"] == 0, what="all acked")
    stored = sync_redis.hget("streammachine:table:hot", "total")
    assert int(stored.split("|")[-1]) == expected
    assert Counter(f["n"] for f in outputs(sync_redis, "hits:out")) == Counter(str(i) for i in range(400))
    retries = sum(app.stats("hit").commit_retries for app in apps)
    assert retries > 0, "the two apps never conflicted: the test did not exercise the version check"


async def test_a_commit_sent_again_after_a_lost_reply_changes_nothing(redis_url):
    """The retry of a commit that went through (its reply lost) must not write its outputs twice."""
    client = aioredis.Redis.from_url(redis_url)
    await client.xgroup_create("in", "g", id="0", mkstream=True)
    for i in range(3):
        await client.xadd("in", {"n": i})
    reply = await client.xreadgroup("g", "c1", {"in": ">"}, count=10)
    entries = reply[0][1]
    effects = ReadEffects("out")
    for entry_id, fields in entries:
        unit = effects.begin([entry_id])
        effects.keep(unit, {"n": fields[b"n"]})
    plan = CommitPlan(effects, stream="in", group="g", consumer="c1", maxlen=None, entries=entries)
    transport = Transport(client)
    await client.script_load(SCRIPT)
    first = plan.outcome((await transport.send([plan.command]))[0])
    second = plan.outcome((await transport.send([plan.command]))[0])
    assert (first.kind, first.skipped) == ("ok", 0)
    assert (second.kind, second.skipped) == ("ok", 3)
    assert await client.xlen("out") == 3
    await client.aclose()


async def test_a_commit_writes_the_outputs_of_exactly_the_units_whose_entries_were_still_pending(redis_url):
    """Units of every shape in one read (a batch of 2 entries with outputs to two streams of different widths,
    an entry with none, one with one, a periodic unit with no entry): when some entries were acknowledged
    meanwhile, only their units' outputs are skipped; the entry-less unit always writes."""
    client = aioredis.Redis.from_url(redis_url)
    await client.xgroup_create("in", "g", id="0", mkstream=True)
    ids = [await client.xadd("in", {"n": i}) for i in range(5)]
    await client.xreadgroup("g", "c1", {"in": ">"}, count=10)
    await client.xack("in", "g", ids[0], ids[3])  # acknowledged meanwhile: entry 0 (of the batch) and entry 3
    effects = ReadEffects("out")
    batch = effects.begin([ids[0], ids[1]])
    effects.keep(batch, [{"batch": 1}, Emit("audit", {"batch": 1, "wide": "yes"})])
    effects.acknowledge([ids[2]])
    for entry_id, n in ((ids[3], 3), (ids[4], 4)):
        effects.keep(effects.begin([entry_id]), {"n": n})
    effects.keep(effects.begin([]), Emit("audit", {"tick": 1}))
    plan = CommitPlan(effects, stream="in", group="g", consumer="c1", maxlen=None)
    await client.script_load(SCRIPT)
    outcome = plan.outcome((await Transport(client).send([plan.command]))[0])
    assert (outcome.kind, outcome.skipped) == ("ok", 2)
    assert [f for _, f in await client.xrange("out")] == [{b"batch": b"1"}, {b"n": b"4"}]
    assert [f for _, f in await client.xrange("audit")] == [{b"batch": b"1", b"wide": b"yes"}, {b"tick": b"1"}]
    assert (await client.xpending("in", "g"))["pending"] == 0
    await client.aclose()


async def test_a_commit_of_one_output_per_entry_to_streams_of_different_shapes(redis_url):
    """One output per entry, to two streams and of two widths (not all alike): each goes where it belongs,
    and the entry acknowledged meanwhile has none."""
    client = aioredis.Redis.from_url(redis_url)
    await client.xgroup_create("in", "g", id="0", mkstream=True)
    ids = [await client.xadd("in", {"n": i}) for i in range(4)]
    await client.xreadgroup("g", "c1", {"in": ">"}, count=10)
    await client.xack("in", "g", ids[1])
    effects = ReadEffects("out")
    for i, entry_id in enumerate(ids):
        effects.keep(effects.begin([entry_id]), {"n": i} if i % 2 else Emit("audit", {"n": i, "even": "yes"}))
    plan = CommitPlan(effects, stream="in", group="g", consumer="c1", maxlen=None)
    await client.script_load(SCRIPT)
    outcome = plan.outcome((await Transport(client).send([plan.command]))[0])
    assert (outcome.kind, outcome.skipped) == ("ok", 1)
    assert [f for _, f in await client.xrange("out")] == [{b"n": b"3"}]
    assert [f for _, f in await client.xrange("audit")] == [
        {b"n": b"0", b"even": b"yes"},
        {b"n": b"2", b"even": b"yes"},
    ]
    await client.aclose()


async def test_output_of_the_wrong_type_writes_nothing(app_factory, sync_redis, caplog):
    app = app_factory()
    totals = app.table("wrongtype", default=0)
    sync_redis.set("out", "not a stream")

    @app.agent("in", group="g", output="out", tables=[totals])
    async def stage(message):
        totals["n"] += 1
        return {"x": 1}

    await app.startup()
    await app.send("in", {"x": 1})
    await wait_until(lambda: caplog.text.count("WRONGTYPE out holds a string") >= 2, what="two refused commits")
    assert sync_redis.get("out") == "not a stream"
    assert sync_redis.exists("streammachine:table:wrongtype") == 0
    assert sync_redis.xpending("in", "g")["pending"] == 1  # still pending: nothing lost


async def test_table_misuse_errors_name_the_table_and_key(app_factory, sync_redis):
    app = app_factory(consumer_config=ConsumerConfig(count=10, block_ms=100, on_error="dead_letter"))
    table = app.table("strict")
    with pytest.raises(RuntimeError, match="'strict'.*'k'.*tables="):
        table["k"] = 1  # outside a handler
    with pytest.raises(KeyError):
        table["missing"]  # no default

    @app.agent("in", group="g", tables=[table])
    async def stage(message):
        if message.message["kind"] == "key":
            table[1] = "x"
        else:
            table["k"] = {1, 2}

    await app.startup()
    await app.send_batch("in", [{"kind": "key"}, {"kind": "value"}])
    await wait_until(lambda: sync_redis.xlen("in:dead") == 2, what="both dead-lettered")
    errors = [f["_dlq_error"] for f in outputs(sync_redis, "in:dead")]
    assert "table 'strict': key 1 is a int, expected str" in errors[0]
    assert "table 'strict', key 'k'" in errors[1] and "not JSON-serialisable" in errors[1]


async def test_hot_swap_of_a_stage_keeps_its_table_and_commits_each_entry_once(app_factory, sync_redis):
    app = app_factory(consumer_config=ConsumerConfig(count=10, block_ms=50))
    totals = app.table("swap", default=0)

    def register(version: int) -> None:
        @app.agent("in", group="g", output="out", tables=[totals], name="stage")
        async def stage(message):
            totals["n"] += 1
            await asyncio.sleep(0.001)
            return {"seq": message.message["seq"], "version": version}

    register(1)
    await app.startup()
    sending = asyncio.ensure_future(app.send_batch("in", [{"seq": i} for i in range(300)]))
    await wait_until(lambda: totals.get("n", 0) > 50, what="some handled by version 1")
    register(2)
    await sending
    await wait_until(lambda: sync_redis.xlen("out") >= 300, 20, what="all handled")
    await wait_until(lambda: sync_redis.xpending("in", "g")["pending"] == 0, what="all acked")
    seqs = Counter(f["seq"] for f in outputs(sync_redis, "out"))
    assert seqs == Counter(str(i) for i in range(300))
    await wait_until(lambda: totals["n"] == 300, what="the last commit's outcome applied locally")
    assert int(sync_redis.hget("streammachine:table:swap", "n").split("|")[-1]) == 300
    assert {f["version"] for f in outputs(sync_redis, "out")} == {"1", "2"}


async def test_a_commit_of_an_entry_committed_meanwhile_changes_no_table(redis_url):
    """One entry handled twice (a consumer claimed it while the commit of its first handling was still queued,
    then committed that first): the second handling already saw the first commit's table values, so every
    version it checks matches. The entry is no longer pending: nothing of the second handling may be written,
    outputs nor table changes (the table counted it twice before)."""
    client = aioredis.Redis.from_url(redis_url)
    await client.xgroup_create("in", "g", id="0", mkstream=True)
    await client.xadd("in", {"n": 5})
    entries = (await client.xreadgroup("g", "c1", {"in": ">"}))[0][1]
    table = Table("regate", default=0)
    await client.script_load(SCRIPT)
    transport = Transport(client)

    async def handle_and_commit():
        effects = ReadEffects("out", [table])
        for entry_id, fields in entries:
            unit = effects.begin([entry_id])
            token = current_unit.set(unit)
            try:
                table["sum"] += int(fields[b"n"])
            finally:
                current_unit.reset(token)
            effects.keep(unit, {"n": fields[b"n"]})
        plan = CommitPlan(effects, stream="in", group="g", consumer="c1", maxlen=None, entries=entries)
        return plan.outcome((await transport.send([plan.command]))[0])

    first = await handle_and_commit()
    second = await handle_and_commit()  # the table in memory holds the first commit: its versions match
    assert first.kind == "ok"
    assert second.kind == "stale"
    assert await client.xlen("out") == 1
    assert (await client.hget(table.key, "sum")).split(b"|")[-1] == b"5"
    assert table["sum"] == 5
    await client.aclose()


async def test_a_commit_sent_on_its_own_to_a_server_without_the_script_loads_it(app_factory, sync_redis):
    """A restarted server has no scripts. Reclaimed entries commit on their own (not in front of a read): the
    NOSCRIPT reply there must load the script and commit, not fail the consumer loop again and again."""
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # its pid names a consumer of this host whose process is gone
    dead = f"{socket.gethostname()}-{gone.pid}-stage:0"
    sync_redis.xgroup_create("in", "g", id="0", mkstream=True)
    for i in range(3):
        sync_redis.xadd("in", {"n": i})
    sync_redis.xreadgroup("g", dead, {"in": ">"})  # left pending by a process of this host that died
    sync_redis.script_flush()
    app = app_factory()
    totals = app.table("noscript", default=0)

    @app.agent("in", group="g", output="out", tables=[totals])
    async def stage(message):
        totals["n"] += 1
        return {"n": message.message["n"]}

    await app.startup()
    await wait_until(lambda: sync_redis.xlen("out") == 3, what="the adopted entries committed")
    assert sync_redis.xpending("in", "g")["pending"] == 0
    assert sync_redis.hget("streammachine:table:noscript", "n").split("|")[-1] == "3"


async def test_a_read_handled_long_after_it_arrived_is_checked_entry_by_entry(app_factory, sync_redis):
    """Entry 2 arrives with the round trip that commits entry 1; that commit conflicts and its redo is slow,
    so entry 2 waits, idle, past claim_idle: app b claims and commits it. When app a then handles entry 2
    its commit must check each entry (it is no longer pending): a "fast" commit (one XACK, every output)
    wrote entry 2's output and table change a second time, as the read was timed from its handling."""
    knobs = ConsumerConfig(count=1, block_ms=50, claim_idle_ms=600, retry_delay_ms=50, start_id="0")
    calls: Counter = Counter()
    apps = {name: app_factory(name, consumer_config=knobs) for name in ("a", "b")}
    tables = {name: app.table("late", default=0) for name, app in apps.items()}
    for name, app in apps.items():

        @app.agent("in", group="g", output="out", tables=[tables[name]], name="stage")
        async def stage(message, name=name):
            n = int(message.message["n"])
            calls[name, n] += 1
            if (name, n) == ("a", 1) and calls[name, n] == 1:
                sync_redis.hset(tables[name].key, "sum", "1||0")  # another writer: this commit conflicts
            elif (name, n) == ("a", 1) and calls[name, n] == 2:
                await asyncio.sleep(2.0)  # a slow redo: entry 2, read meanwhile, waits unhandled
            tables[name]["sum"] += n
            return {"n": n}

    await apps["a"].send_batch("in", [{"n": 1}, {"n": 2}])
    await apps["a"].startup()
    await wait_until(lambda: calls["a", 1] == 2, what="a: entry 1 handled again after the conflict")
    assert sync_redis.xpending("in", "g")["pending"] == 2  # entry 2 came with that round trip
    await apps["b"].startup()
    await wait_until(lambda: calls["b", 2] == 1, what="b: entry 2 claimed and handled")
    await wait_until(lambda: calls["a", 2] >= 1, what="a: entry 2 handled late")
    await wait_until(lambda: sync_redis.xpending("in", "g")["pending"] == 0, what="all acked")
    await apps["a"].shutdown()
    assert Counter(f["n"] for f in outputs(sync_redis, "out")) == {"1": 1, "2": 1}
    assert sync_redis.hget(tables["a"].key, "sum").split("|")[-1] == "3"
