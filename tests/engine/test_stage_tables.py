"""Tables as the README states them: writes only in handlers that declare the table; the in-memory copy
(what ``table[k]``, ``to_dataframe()`` and ``live_table`` show) holds the last commit after a stop or hot swap."""

from __future__ import annotations

import time

from streammachine import ConsumerConfig
from streammachine.engine.commit import SCRIPT
from tests.helpers import wait_until

# A stage's commit rides in front of its next XREADGROUP; with a long block and no more entries, the consumer is
# still blocked in that read (the commit done in Redis, its reply unread) when it is told to stop.
IDLE = ConsumerConfig(count=10, block_ms=5000)

LOST_REPLY = (
    "defect (engine/stage.py _settle): a stop cancels the read that carried the last commit; the commit is sent "
    "again, gated, and refused as a conflict (its own write moved the versions); while stopping, the conflict's "
    "current values are not taken (refresh), so the local table keeps the values from before that commit"
)


def stored_value(sync_redis, table: str, key: str) -> str:
    stored = sync_redis.hget(f"streammachine:table:{table}", key)
    return stored and stored.split("|")[-1]


async def test_after_a_hot_swap_the_local_table_holds_the_last_commit(app_factory, sync_redis):
    sync_redis.script_load(SCRIPT)  # no NOSCRIPT round: the first commit goes out in front of the next read
    app = app_factory(consumer_config=IDLE)
    totals = app.table("swap_local", default=0)

    def register(version: int) -> None:
        @app.agent("in", group="g", output="out", tables=[totals], name="stage")
        async def stage(message):
            totals["n"] += 1
            return {"version": version}

    register(1)
    await app.startup()
    await app.send("in", {"x": 1})
    await wait_until(lambda: sync_redis.xlen("out") == 1, what="the commit in Redis")
    assert stored_value(sync_redis, "swap_local", "n") == "1"
    register(2)  # the stage cell re-run; nothing more arrives
    await wait_until(lambda: app.last_swap_ms is not None, what="the swap")
    await wait_until(lambda: totals.get("n") == 1, 3, what="the local table to hold what Redis holds")


async def test_after_stop_the_local_table_holds_the_last_commit(app_factory, sync_redis):
    sync_redis.script_load(SCRIPT)
    app = app_factory(consumer_config=IDLE)
    totals = app.table("stop_local", default=0)

    @app.agent("in", group="g", output="out", tables=[totals])
    async def stage(message):
        totals["n"] += 1
        return {"n": 1}

    await app.startup()
    await app.send("in", {"x": 1})
    await wait_until(lambda: sync_redis.xlen("out") == 1, what="the commit in Redis")
    await app.stop()
    assert stored_value(sync_redis, "stop_local", "n") == "1"
    assert totals.to_dict() == {"n": 1}, "the stopped app's table misses its last commit"


async def test_a_stage_cannot_write_a_table_it_does_not_declare(app_factory, sync_redis):
    app = app_factory(consumer_config=ConsumerConfig(count=10, block_ms=100, on_error="dead_letter"))
    declared = app.table("declared", default=0)
    other = app.table("other", default=0)

    @app.agent("in", group="g", output="out", tables=[declared])
    async def stage(message):
        declared["n"] += 1
        other["n"] += 1
        return {"x": 1}

    await app.startup()
    await app.send("in", {"x": 1})
    await wait_until(lambda: sync_redis.xlen("out") + sync_redis.xlen("in:dead") == 1, what="the entry settled")
    assert sync_redis.exists("streammachine:table:other") == 0, "a write to an undeclared table was committed"
    error = sync_redis.xrange("in:dead")[0][1]["_dlq_error"]
    assert "'other'" in error and "tables=" in error


async def test_the_local_copy_does_not_go_back_to_an_older_commit(app_factory, sync_redis):
    sync_redis.script_load(SCRIPT)  # no NOSCRIPT round: each commit goes out in front of the next read
    app = app_factory(consumer_config=ConsumerConfig(count=10))
    shared = app.table("shared", default=0)

    # two stages, one table (safe: the version check); count_a's reads block longer, so its reply comes back last
    for stream, block_ms in (("a", 3000), ("b", 1000)):

        @app.agent(stream, group="g", tables=[shared], name=f"count_{stream}", block_ms=block_ms)
        async def count(message):
            shared["n"] += 1

    await app.startup()
    await app.send("a", {"x": 1})  # n = 1, committed in front of count_a's next read
    await wait_until(lambda: stored_value(sync_redis, "shared", "n") == "1", what="a's commit in Redis")
    committed_at = time.monotonic()
    await app.send("b", {"x": 1})  # count_b saw n = 0: refused, redone on n = 1 -> 2
    await app.send("b", {"x": 2})  # -> 3
    await wait_until(lambda: stored_value(sync_redis, "shared", "n") == "3", what="all three in Redis")
    await wait_until(lambda: shared.get("n") == 3, 5, what="the local copy to take b's last commit")

    def count_a_read_again() -> bool:  # its blocked read returned (with its commit's reply) and it reads again
        (consumer,) = sync_redis.xinfo_consumers("a", "g")
        return consumer["idle"] < (time.monotonic() - committed_at) * 1000 - 1500

    await wait_until(count_a_read_again, 10, what="count_a's read carrying its commit to return")
    assert shared.get("n") == 3, "the local copy went back to count_a's older commit"
