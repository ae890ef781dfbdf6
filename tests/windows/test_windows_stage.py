"""Windows as stages (``@app.agent(stream, window=...)``): rows to output= and to the function, state committed
with the ack (restart, hot swap, failed units, shared keys), late entries in status, wall-clock closing."""

from __future__ import annotations

import json
import random

import pytest

from streammachine import ConsumerConfig
from streammachine.windows import Count, Max, Sum, Window
from streammachine.windows.stage import table_name
from tests.helpers import wait_until

BASE = 1_700_000_000_000
KEYS = ["AAPL", "MSFT", "GOOG"]


def ticks(n: int, seed: int = 1, start: int = BASE, step: int = 7) -> list:
    """(id, fields) in id order: 3 keys, a qty each, about 7 ms apart (several 100 ms windows)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        fields = {"symbol": rng.choice(KEYS), "qty": str(rng.randint(1, 9))}
        out.append((f"{start + i * step}-0", fields))
    return out


def window(**kwargs):
    return Window.tumbling(100, key="symbol", **kwargs).agg(n=Count(), qty=Sum("qty"), top=Max("qty"))


def expected_rows(w, entries) -> list:
    """What the window gives over the same entries in one process, as the output stream holds them."""
    state = w.start()
    rows = state.add_entries([(i, {k.encode(): v.encode() for k, v in f.items()}) for i, f in entries])
    return [as_output(r) for r in rows]


def as_output(row: dict) -> dict:
    return {k: str(v) for k, v in row.items()}


def output_rows(sync_redis, stream: str) -> list:
    return [{k: v for k, v in fields.items() if k != "sent"} for _, fields in sync_redis.xrange(stream)]


def add(sync_redis, stream: str, entries) -> None:
    pipe = sync_redis.pipeline()
    for entry_id, fields in entries:
        pipe.xadd(stream, fields, id=entry_id)
    pipe.execute()


def register(app, w, seen=None, name="vwin", **kwargs):
    kwargs.setdefault("start_id", "0")

    @app.agent("ticks", group="g", window=w, output="bars", name=name, **kwargs)
    def bars(rows):
        if seen is not None:
            seen.extend(rows)
        return rows

    return bars


async def test_rows_go_to_output_and_to_the_function(app_factory, sync_redis):
    app = app_factory()
    seen: list = []
    w = window()
    register(app, w, seen)
    data = ticks(300)
    add(sync_redis, "ticks", data)
    await app.startup()
    expected = expected_rows(w, data)
    await wait_until(lambda: sync_redis.xlen("bars") == len(expected), what="every closed window in the output")
    assert output_rows(sync_redis, "bars") == expected
    assert [as_output(r) for r in seen] == expected
    status = next(a for a in (await app.status()).agents if a.name == "vwin")
    assert status.window["keys"] == 3 and status.window["late"] == 0
    assert sync_redis.exists(f"streammachine:table:{table_name('ticks', 'vwin', w)}")


async def test_state_survives_a_restart_mid_window(app_factory, sync_redis):
    """Half the data, stop (windows open), a new App (an empty core): the rest continues the open windows."""
    w = window()
    data = ticks(400, seed=2)
    first = app_factory("one")
    register(first, w)
    add(sync_redis, "ticks", data[:200])
    await first.startup()
    await wait_until(lambda: first.stats("vwin").processed == 200, what="the first half handled")
    await first.shutdown()
    second = app_factory("two")
    register(second, w)
    add(sync_redis, "ticks", data[200:])
    await second.startup()
    expected = expected_rows(w, data)
    await wait_until(lambda: sync_redis.xlen("bars") >= len(expected), what="every closed window")
    assert output_rows(sync_redis, "bars") == expected


async def test_a_hot_swap_keeps_the_window(app_factory, sync_redis):
    app = app_factory()
    w = window()
    data = ticks(400, seed=3)
    register(app, w)
    add(sync_redis, "ticks", data[:200])
    await app.startup()
    await wait_until(lambda: app.stats("vwin").processed == 200, what="the first half handled")
    register(app, w)  # the cell re-run: a new handler, the same window
    await wait_until(lambda: app.last_swap_ms is not None, what="the swap")
    add(sync_redis, "ticks", data[200:])
    expected = expected_rows(w, data)
    await wait_until(lambda: sync_redis.xlen("bars") >= len(expected), what="every closed window")
    assert output_rows(sync_redis, "bars") == expected


async def test_late_entries_are_counted_in_status_and_not_added(app_factory, sync_redis):
    app = app_factory()
    w = Window.tumbling(100, key="symbol", time="ts").agg(n=Count())
    register(app, w)
    await app.startup()
    add(sync_redis, "ticks", [(f"{i + 1}-0", {"symbol": "A", "ts": str(BASE + t)}) for i, t in enumerate([0, 150, 40])])
    await wait_until(lambda: app.stats("vwin").processed == 3, what="three entries handled")

    async def late() -> int:
        status = next(a for a in (await app.status()).agents if a.name == "vwin")
        return status.window["late"]

    await wait_until(lambda: late(), what="the late entry in status")
    assert await late() == 1
    assert output_rows(sync_redis, "bars") == [{"key": "A", "start": str(BASE), "end": str(BASE + 100), "n": "1"}]


async def test_current_emits_every_update(app_factory, sync_redis):
    app = app_factory()
    w = Window.tumbling(100, key="symbol", emit="current").agg(n=Count())
    register(app, w)
    add(sync_redis, "ticks", [(f"{BASE + t}-0", {"symbol": "A"}) for t in (1, 2, 3)])
    await app.startup()
    await wait_until(lambda: sync_redis.xlen("bars") == 3, what="a row per update")
    assert [r["n"] for r in output_rows(sync_redis, "bars")] == ["1", "2", "3"]


async def test_wall_clock_closes_quiet_keys(app_factory, sync_redis):
    app = app_factory()
    register(app, window(), wall_clock=0.05)
    add(sync_redis, "ticks", [("5-0", {"symbol": "A", "qty": "2"}), ("6-0", {"symbol": "A", "qty": "3"})])
    await app.startup()  # ids at 5 ms after the epoch: the wall clock is far past their window
    await wait_until(lambda: sync_redis.xlen("bars") == 1, what="the quiet key's window closed by the wall clock")
    assert output_rows(sync_redis, "bars") == [
        {"key": "A", "start": "0", "end": "100", "n": "2", "qty": "5.0", "top": "3.0"}
    ]


async def test_a_bad_entry_is_dead_lettered_and_the_rest_counted_once(app_factory, sync_redis):
    app = app_factory()
    w = window()
    register(app, w)
    data = ticks(60, seed=4)
    bad = (f"{BASE + 5}-1", {"symbol": "AAPL", "qty": "lots"})
    add(sync_redis, "ticks", [data[0], bad, *data[1:]])
    await app.startup()
    expected = expected_rows(w, data)
    await wait_until(lambda: app.stats("vwin").dead_lettered == 1, what="the bad entry dead-lettered")
    await wait_until(lambda: sync_redis.xlen("bars") >= len(expected), what="every closed window")
    assert output_rows(sync_redis, "bars") == expected
    assert "qty" in app.stats("vwin").last_error and "lots" in app.stats("vwin").last_error


async def test_two_consumers_on_the_same_keys_count_each_entry_once(app_factory, sync_redis):
    """Two consumers read alternating parts of one stream; each key's state goes through both (conflicts).

    Their reads reach the window out of order, and a consumer whose commits keep meeting the other's can fall
    further behind than the grace (its entries are then late): each entry is counted once, in a closed window,
    in an open one, or as late.
    """
    app = app_factory(consumer_config=ConsumerConfig(count=7, block_ms=50, claim_idle_ms=1000))
    w = Window.tumbling(100, key="symbol", grace_ms=1000).agg(n=Count(), qty=Sum("qty"))
    register(app, w, concurrency=2)
    data = ticks(600, seed=5)
    await app.startup()
    for at in range(0, len(data), 50):
        add(sync_redis, "ticks", data[at : at + 50])
    await wait_until(
        lambda: sync_redis.xpending("ticks", "g")["pending"] == 0 and app.stats("vwin").processed >= 600,
        20,
        what="every entry handled",
    )
    await wait_until(lambda: counted(app, w, sync_redis) == len(data), 5, what="the last commit")
    assert app.stats("vwin").commit_retries > 0  # the two did meet on keys


def counted(app, w, sync_redis) -> int:
    """Entries in the closed windows (the output), the open ones (the committed state) and late (status)."""
    closed = sum(int(r["n"]) for r in output_rows(sync_redis, "bars"))
    stored = sync_redis.hgetall(f"streammachine:table:{table_name('ticks', 'vwin', w)}")
    states = [json.loads(raw.split("|", 2)[2]) for raw in stored.values()]
    open_ = sum(record[0] for value in states for _, record in value["state"]["windows"])
    return closed + open_ + sum(value["late"] for value in states)


def test_window_agents_refuse_options_they_cannot_honour(app_factory):
    app = app_factory()
    with pytest.raises(ValueError, match="batch="):
        app.agent("ticks", window=window(), batch=True)(lambda rows: rows)
    with pytest.raises(ValueError, match="needs window="):
        app.agent("ticks", wall_clock=1.0)(lambda m: None)
    with pytest.raises(TypeError, match="expected a Window"):
        app.agent("ticks", window="tumbling")(lambda rows: rows)


async def test_replay_gives_what_the_live_run_gave(app_factory, sync_redis):
    """The live run reads 13 entries at a time and restarts half-way; the replay reads 500 at a time from id 0."""
    from streammachine.replay import replay

    data = ticks(500, seed=6)
    shuffled = data[:]  # out of order within the grace: ids stay increasing, the event time is a field
    rng = random.Random(6)
    for i in range(len(shuffled) - 1):
        if rng.random() < 0.3:
            shuffled[i], shuffled[i + 1] = shuffled[i + 1], shuffled[i]
    entries = [
        (f"{i + 1}-0", {**fields, "ts": entry_id.split("-")[0]}) for i, (entry_id, fields) in enumerate(shuffled)
    ]
    w = Window.hopping(200, 100, key="symbol", time="ts", grace_ms=30).agg(n=Count(), qty=Sum("qty"), top=Max("qty"))
    small_reads = ConsumerConfig(count=13, block_ms=50)
    first = app_factory("live1", consumer_config=small_reads)
    register(first, w)
    add(sync_redis, "ticks", entries[:250])
    await first.startup()
    await wait_until(lambda: first.stats("vwin").processed == 250, what="the first half handled live")
    await first.shutdown()
    second = app_factory("live2", consumer_config=small_reads)
    register(second, w)
    add(sync_redis, "ticks", entries[250:])
    await second.startup()
    await wait_until(lambda: second.stats("vwin").processed == 250, what="the second half handled live")
    await wait_until(lambda: sync_redis.xpending("ticks", "g")["pending"] == 0, what="the last commit")
    live = output_rows(sync_redis, "bars")
    assert len(live) > 20

    result = await replay(second, "vwin", start="start", end="end", collect=True, progress=False, count=500)
    replayed = [as_output(row) for _, rows in result.outputs_of("vwin") for row in rows]
    assert replayed == live
    assert not [k for k in sync_redis.keys("streammachine:table:*") if ":replay:" in k]  # its state is removed


async def test_the_harness_restarts_a_window_agent_with_its_window(app_factory, sync_redis):
    from streammachine.testkit.faults import restart_agent

    app = app_factory()
    w = window()
    register(app, w)
    data = ticks(300, seed=8)
    add(sync_redis, "ticks", data[:150])
    await app.startup()
    await wait_until(lambda: app.stats("vwin").processed == 150, what="the first half handled")
    restart_agent(app, "vwin")
    assert app.agents["vwin"].window is not None and app.agents["vwin"].output == "bars"
    add(sync_redis, "ticks", data[150:])
    expected = expected_rows(w, data)
    await wait_until(lambda: sync_redis.xlen("bars") >= len(expected), what="every closed window")
    assert output_rows(sync_redis, "bars") == expected
