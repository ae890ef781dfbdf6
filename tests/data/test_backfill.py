"""Backfill: DataFrames, CSV and Parquet into a stream with ids from a time column, on a real server."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from streammachine.data.backfill import BackfillError, backfill

T0 = pd.Timestamp("2024-05-01T09:30:00Z")
T0_MS = 1714555800000


def ticks(offsets_ms, **columns) -> pd.DataFrame:
    frame = pd.DataFrame({"ts": [T0 + pd.Timedelta(milliseconds=o) for o in offsets_ms]})
    for name, values in columns.items():
        frame[name] = values
    return frame


async def test_ids_come_from_the_time_column_and_ties_get_sequence_numbers(app_factory, sync_redis):
    frame = ticks([0, 0, 0, 1, 5, 5], price=[1.5, 2.0, 2.5, 3.0, np.nan, 4.0], meta=[{"a": 1}] * 6)
    result = await backfill(app_factory(), "ticks", frame, time_column="ts", progress=False)
    entries = sync_redis.xrange("ticks")
    assert [i for i, _ in entries] == [
        f"{T0_MS}-0",
        f"{T0_MS}-1",
        f"{T0_MS}-2",
        f"{T0_MS + 1}-0",
        f"{T0_MS + 5}-0",
        f"{T0_MS + 5}-1",
    ]
    assert entries[0][1] == {"price": "1.5", "meta": '{"a":1}'}, "the time column is the id, not a field"
    assert entries[4][1] == {"meta": '{"a":1}'}, "a missing value is left out of that entry"
    assert (result.written, result.skipped, result.first_id, result.last_id) == (6, 0, f"{T0_MS}-0", f"{T0_MS + 5}-1")


async def test_csv_and_parquet_files_give_the_same_entries(app_factory, sync_redis, tmp_path):
    frame = ticks([0, 10, 10, 20], symbol=["A", "B", "A", "B"], price=[1.0, 2.0, 3.0, 4.0])
    frame.to_csv(tmp_path / "ticks.csv", index=False)
    frame.to_parquet(tmp_path / "ticks.parquet", index=False)
    app = app_factory()
    await backfill(app, "from_csv", tmp_path / "ticks.csv", time_column="ts", progress=False)
    await backfill(app, "from_parquet", str(tmp_path / "ticks.parquet"), time_column="ts", progress=False)
    assert sync_redis.xrange("from_csv") == sync_redis.xrange("from_parquet")
    assert [i for i, _ in sync_redis.xrange("from_csv")][1:3] == [f"{T0_MS + 10}-0", f"{T0_MS + 10}-1"]


async def test_numeric_times_in_a_unit_and_keeping_the_time_column(app_factory, sync_redis):
    frame = pd.DataFrame({"t": [1714555800.0, 1714555800.0005, 1714555801.25], "v": [1, 2, 3]})
    await backfill(app_factory(), "s", frame, time_column="t", unit="s", keep_time_column=True, progress=False)
    entries = sync_redis.xrange("s")
    assert [i for i, _ in entries] == [f"{T0_MS}-0", f"{T0_MS}-1", f"{T0_MS + 1250}-0"]
    assert entries[2][1] == {"t": "1714555801.25", "v": "3"}


async def test_out_of_order_rows_are_refused_naming_both_rows_and_nothing_is_written(app_factory, sync_redis):
    frame = ticks([0, 5, 3, 9], v=[1, 2, 3, 4])
    frame.index = ["a", "b", "c", "d"]
    with pytest.raises(BackfillError) as caught:
        await backfill(app_factory(), "s", frame, time_column="ts", progress=False)
    text = str(caught.value)
    assert "row 'c' (position 2, 2024-05-01T09:30:00.003000+00:00) is earlier than row 'b'" in text
    assert "Nothing was written" in text and "sort_values('ts'" in text
    assert sync_redis.exists("s") == 0


async def test_bad_time_columns_are_clear_errors(app_factory):
    app = app_factory()
    with pytest.raises(BackfillError, match=r"no time column 'time'; columns are \['ts', 'v'\]"):
        await backfill(app, "s", ticks([0], v=[1]), time_column="time", progress=False)
    frame = pd.DataFrame({"ts": ["2024-05-01T09:30:00Z", None], "v": [1, 2]})
    with pytest.raises(BackfillError, match=r"row 1 \(position 1\) has no time in 'ts'"):
        await backfill(app, "s", frame, time_column="ts", progress=False)
    with pytest.raises(BackfillError, match="does not hold times"):
        await backfill(app, "s", pd.DataFrame({"ts": ["soon"], "v": [1]}), time_column="ts", progress=False)
    with pytest.raises(BackfillError, match="expected a .csv"):
        await backfill(app, "s", __file__, progress=False)


async def test_appending_to_a_stream_continues_its_ids_and_refuses_older_rows(app_factory, sync_redis):
    app = app_factory()
    sync_redis.xadd("s", {"v": "live"}, id=f"{T0_MS + 5}-0")
    await backfill(app, "s", ticks([5, 6], v=[1, 2]), time_column="ts", progress=False)
    assert [i for i, _ in sync_redis.xrange("s")] == [f"{T0_MS + 5}-0", f"{T0_MS + 5}-1", f"{T0_MS + 6}-0"]
    with pytest.raises(BackfillError, match="already has entries up to .*Nothing was written"):
        await backfill(app, "s", ticks([1, 7], v=[1, 2]), time_column="ts", progress=False)
    assert sync_redis.xlen("s") == 3


async def test_resume_skips_what_a_stopped_load_wrote(app_factory, sync_redis):
    app = app_factory()
    frame = ticks([0, 1, 1, 2, 3], v=range(5))
    await backfill(app, "s", frame.iloc[:3], time_column="ts", progress=False)  # a load that stopped half-way
    result = await backfill(app, "s", frame, time_column="ts", resume=True, progress=False)
    assert (result.skipped, result.written) == (3, 2)
    assert [f["v"] for _, f in sync_redis.xrange("s")] == ["0", "1", "2", "3", "4"]


async def test_chunks_report_progress(app_factory, sync_redis):
    seen = []
    frame = ticks(range(10), v=range(10))
    await backfill(
        app_factory(),
        "s",
        frame,
        time_column="ts",
        chunk_size=3,
        progress=lambda done, total: seen.append((done, total)),
    )
    assert seen == [(3, 10), (6, 10), (9, 10), (10, 10)]
    assert sync_redis.xlen("s") == 10


async def test_large_load_is_strictly_increasing(app_factory, sync_redis):
    rng = np.random.default_rng(7)
    offsets = np.sort(rng.integers(0, 5_000, size=20_000))  # many ties
    frame = pd.DataFrame({"ts": T0_MS + offsets, "v": np.arange(20_000)})
    result = await backfill(app_factory(), "big", frame, time_column="ts", unit="ms", progress=False)
    assert result.written == 20_000 and sync_redis.xlen("big") == 20_000
    ids = [tuple(map(int, i.split("-"))) for i, _ in sync_redis.xrange("big")]
    assert ids == sorted(ids) and len(set(ids)) == 20_000
    assert [int(f["v"]) for _, f in sync_redis.xrange("big", count=50)] == list(range(50)), "input order kept"


def test_cli_backfill(redis_url, sync_redis, tmp_path):
    ticks([0, 0, 7], v=[1, 2, 3]).to_csv(tmp_path / "h.csv", index=False)
    command = [sys.executable, "-m", "streammachine", "backfill", "hist", str(tmp_path / "h.csv"), "--time-column"]
    done = subprocess.run([*command, "ts", "--redis-url", redis_url], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert f"wrote 3 entries to hist: {T0_MS}-0 .. {T0_MS + 7}-0" in done.stdout
    again = subprocess.run([*command, "ts", "--redis-url", redis_url], capture_output=True, text=True, timeout=60)
    assert again.returncode == 1 and "resume" in again.stderr
