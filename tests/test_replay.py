"""Replay: agents over a range of history in groups of their own, paced or flat out, on a real server."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
import time
from typing import List

import msgspec
import pytest

from streammachine import FastOHLC, Message
from streammachine.replay import replay
from tests.helpers import wait_until


class Tick(msgspec.Struct):
    symbol: str
    price: float
    qty: float


class Candles:
    """An event-time stage: 100 ms candles of the ticks it is handed, returned (and kept) as each completes."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.aggregator = FastOHLC([100])
        self.emitted: List[tuple] = []

    async def __call__(self, tick: Tick, record: Message):
        symbol = tick.symbol.encode()
        self.aggregator.update_tick(symbol, tick.price, tick.qty, record.timestamp_ms)
        done = [
            (c.candle_start_ms, c.open, c.high, c.low, c.close, c.volume, c.trade_count)
            for c in self.aggregator.flush_interval(symbol, 100)
        ]
        self.emitted += done
        return done or None


def history(client, stream: str, offsets_ms, base: int = 1_000_000) -> List[str]:
    """Entries at explicit times (ms offsets from ``base``), as a backfill would write them."""
    ids = []
    for i, offset in enumerate(offsets_ms):
        ids.append(client.xadd(stream, {"n": i}, id=f"{base + offset}-*"))
    return ids


async def test_replay_of_a_candle_stage_yields_exactly_what_the_live_run_did(app_factory, sync_redis):
    app = app_factory()
    stage = Candles()
    app.agent("ticks", group="live", name="candles")(stage)
    await app.startup()
    for i in range(60):  # live data at its own pace: ~10 ms apart, so ~6 candles of 100 ms
        await app.send("ticks", Tick(symbol="AAPL" if i % 3 else "MSFT", price=100 + (i * 7) % 11, qty=1 + i % 4))
        await asyncio.sleep(0.01)
    await wait_until(lambda: app.stats("candles").processed == 60, what="the live run handled every tick")
    live = list(stage.emitted)
    assert len(live) >= 3, live
    live_group = sync_redis.xinfo_groups("ticks")[0]

    stage.reset()  # the same stage, fresh state, over the same history
    result = await replay(app, "candles", collect=True, progress=False)
    replayed = [candle for _, candles in result.outputs_of("candles") for candle in candles]
    assert replayed == live
    assert result.handled == {"candles": 60} and result.dead_lettered == {"candles": 0}
    assert sync_redis.xinfo_groups("ticks") == [live_group], "the live group is untouched, the replay group gone"


async def test_start_and_end_are_inclusive_ids_or_times(app_factory, sync_redis):
    ids = history(sync_redis, "s", [0, 10, 10, 20, 30, 40])
    app = app_factory()
    seen = []

    @app.agent("s", group="g", name="see")
    async def see(record):
        seen.append(record.key)

    result = await replay(app, start=ids[1], end="1970-01-01T00:16:40.030Z", progress=False)
    assert seen == ids[1:5] and result.handled == {"see": 4}
    assert result.ranges == {"s": (ids[1], ids[4])}
    seen.clear()
    await replay(app, start="1000020", end="1000020", progress=False)
    assert seen == [ids[3]], "a bare millisecond as the end includes all of that millisecond"


async def test_kept_group_resumes_and_default_groups_are_removed(app_factory, sync_redis):
    history(sync_redis, "s", range(5))
    app = app_factory()
    seen = []

    @app.agent("s", group="g", name="see")
    async def see(record):
        seen.append(record.key)

    first = await replay(app, group="run1", keep_group=True, progress=False)
    assert first.groups == {"see": "g:run1"} and len(seen) == 5
    history(sync_redis, "s", [10, 11], base=2_000_000)
    again = await replay(app, group="run1", keep_group=True, progress=False)
    assert again.handled == {"see": 2} and len(seen) == 7, "a kept group goes on where it stopped"
    await replay(app, progress=False)
    assert {g["name"] for g in sync_redis.xinfo_groups("s")} == {"g:run1"}


async def test_pacing_keeps_event_gaps_divided_by_speed(app_factory, sync_redis):
    history(sync_redis, "s", range(0, 1001, 100))  # 11 entries over one second of event time
    app = app_factory()
    calls = []

    @app.agent("s", group="g", name="paced")
    async def paced(record):
        calls.append((time.monotonic(), record.timestamp_ms))

    started = time.monotonic()
    await replay(app, speed=4, progress=False)
    elapsed = time.monotonic() - started
    wall0, event0 = calls[0]
    for wall, event in calls:
        assert wall - wall0 >= (event - event0) / 1000 / 4 - 0.005, "never ahead of the paced schedule"
    assert elapsed < 0.25 + 5.0, "paced, not stalled (a generous bound for a loaded machine)"
    with pytest.raises(ValueError, match="speed=0"):
        await replay(app, speed=0, progress=False)


async def test_progress_reports_every_entry_against_the_total(app_factory, sync_redis):
    history(sync_redis, "s", range(7))
    app = app_factory()

    @app.agent("s", group="g", batch=True, name="batch")
    async def batch(records):
        return len(records)

    updates = []
    result = await replay(app, collect=True, progress=lambda done, total: updates.append((done, total)))
    assert updates[-1] == (7, 7) and all(total == 7 for _, total in updates)
    assert sum(n for _, n in result.outputs_of("batch")) == 7


async def test_invalid_entries_are_dead_lettered_in_a_replay(app_factory, sync_redis):
    for price in ("1.5", "oops", "2.5"):
        sync_redis.xadd("ticks", {"symbol": "A", "price": price, "qty": "1"})
    app = app_factory()
    prices = []

    @app.agent("ticks", group="g", name="typed")
    async def typed(tick: Tick):
        prices.append(tick.price)

    result = await replay(app, progress=False)
    assert prices == [1.5, 2.5] and result.dead_lettered == {"typed": 1}
    (_, dead), *_ = sync_redis.xrange("ticks:dead")
    assert dead["_dlq_group"] == result.groups["typed"] and dead["price"] == "oops"


async def test_unknown_agent_and_empty_ranges(app_factory, sync_redis):
    app = app_factory()

    @app.agent("s", group="g", name="see")
    async def see(record): ...

    with pytest.raises(KeyError, match="no single agent 'nope'"):
        await replay(app, "nope", progress=False)
    assert (await replay(app, progress=False)).handled == {"see": 0}, "no stream yet: nothing to replay"


def test_cli_replay_runs_a_scripts_agents(redis_url, sync_redis, tmp_path):
    ids = history(sync_redis, "events", range(6))
    out = tmp_path / "handled.txt"
    script = tmp_path / "pipeline.py"
    script.write_text(
        textwrap.dedent(
            f"""
            from streammachine import App

            app = App("cli-replay")

            @app.agent("events", group="g")
            async def count(record):
                with open({str(out)!r}, "a") as f:
                    f.write(record.key + "\\n")
            """
        )
    )
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "streammachine",
            "replay",
            str(script),
            "--start",
            ids[1],
            "--end",
            ids[3],
            "--count",
            "2",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**__import__("os").environ, "REDIS_URL": redis_url},
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["handled"] == {f"{script.stem}.count": 3}
    assert out.read_text().split() == ids[1:4]
