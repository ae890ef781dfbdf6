"""Loading history into a stream: a DataFrame, CSV or Parquet file, with ids from a timestamp column.

Each row becomes one entry whose id carries the row's time, so consumers,
windows and candles see the original event times::

    result = await backfill(app, "ticks", "ticks.parquet", time_column="ts")

- Ids are explicit and strictly increasing: ``<milliseconds>-<sequence>``;
  rows in the same millisecond get sequence numbers 0, 1, 2... in input
  order. Input must be sorted by time (ties allowed): a row earlier than the
  one before it is an error naming both rows, and nothing is written.
- The time column may hold datetimes (naive ones are UTC), ISO 8601 text,
  or numbers in ``unit`` ("s", "ms", "us", "ns"; default "ms"). It is not
  sent as a field unless ``keep_time_column=True`` (the id carries it).
- A stream that already has entries: rows must come after its last id
  (rows in that same millisecond continue its sequence).
  ``resume=True`` skips rows whose ids the stream already has (a load that
  stopped half-way, run again with the same data).
- Fields: as ``app.send`` sends them (numbers as numbers, dicts/lists as
  JSON); missing values (NaN, None) are left out of that entry.
- Sent in chunks of ``chunk_size`` XADDs, each chunk one pipelined round
  trip (``Transport``), with progress (see ``streammachine._progress``).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, List, Mapping, Optional, Tuple, Union

import numpy as np
import pandas as pd

from streammachine._progress import Progress, ProgressOption
from streammachine.redis.connection import async_client
from streammachine.redis.entries import as_text, parse_stream_id
from streammachine.redis.records import encode_record
from streammachine.redis.transport import Transport

Source = Union[pd.DataFrame, str, "os.PathLike[str]", Iterable[dict]]
UNITS = ("s", "ms", "us", "ns")


class BackfillError(ValueError):
    """The input cannot become entries as asked (order, time column, stream position), or a send failed."""


@dataclass
class BackfillResult:
    stream: str
    written: int
    skipped: int  # rows the stream already had (resume=True)
    first_id: Optional[str]
    last_id: Optional[str]
    seconds: float

    @property
    def rate(self) -> float:
        return self.written / self.seconds if self.seconds > 0 else 0.0


def load_frame(source: Source) -> pd.DataFrame:
    """A DataFrame from a DataFrame, a .csv(.gz) or .parquet path, or an iterable of dict rows."""
    if isinstance(source, pd.DataFrame):
        return source
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        name = path.name.lower()
        if not path.exists():
            raise FileNotFoundError(f"backfill: no such file {str(path)!r}")
        if name.endswith((".parquet", ".pq")):
            try:
                return pd.read_parquet(path)
            except ImportError as exc:
                raise ImportError(
                    f"reading Parquet needs pyarrow: pip install 'streammachine[parquet]' ({exc})"
                ) from None
        if name.endswith((".csv", ".csv.gz", ".tsv")):
            return pd.read_csv(path, sep="\t" if name.endswith(".tsv") else ",")
        raise BackfillError(f"backfill: {str(path)!r}: expected a .csv, .csv.gz, .tsv or .parquet file")
    return pd.DataFrame(list(source))


def times_ms(frame: pd.DataFrame, time_column: str, unit: str = "ms") -> np.ndarray:
    """The time column as int64 epoch milliseconds (an error names the first row that is not a time)."""
    if time_column not in frame.columns:
        raise BackfillError(f"backfill: no time column {time_column!r}; columns are {list(frame.columns)}")
    if unit not in UNITS:
        raise BackfillError(f"backfill: unit={unit!r}: expected one of {UNITS}")
    column = frame[time_column]
    try:
        if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
            stamps = pd.to_datetime(column, unit=unit, utc=True)
        else:
            stamps = pd.to_datetime(column, utc=True, format="ISO8601" if column.dtype == object else None)
    except (ValueError, TypeError, OverflowError) as exc:
        raise BackfillError(f"backfill: column {time_column!r} does not hold times ({exc})") from None
    missing = np.flatnonzero(stamps.isna().to_numpy())
    if missing.size:
        row = missing[0]
        raise BackfillError(
            f"backfill: row {_label(frame, row)} (position {row}) has no time in {time_column!r} "
            f"(value {column.iloc[row]!r})"
        )
    ns = stamps.to_numpy(dtype="datetime64[ns]").astype(np.int64)
    if ns.size and ns.min() < 0:
        row = int(np.argmin(ns))
        raise BackfillError(f"backfill: row {_label(frame, row)} is before 1970: stream ids cannot express it")
    return ns // 1_000_000


def assign_ids(ms: np.ndarray, frame: Optional[pd.DataFrame] = None, time_column: str = "time") -> np.ndarray:
    """Sequence numbers for ``ms`` (sorted, ties allowed): 0, 1, 2... within each millisecond.

    A time earlier than the one before it is an error naming both rows.
    """
    if ms.size == 0:
        return ms.copy()
    steps = np.diff(ms)
    backwards = np.flatnonzero(steps < 0)
    if backwards.size:
        at = int(backwards[0]) + 1
        label = (lambda i: _label(frame, i)) if frame is not None else (lambda i: str(i))
        raise BackfillError(
            f"backfill: rows are out of order: row {label(at)} (position {at}, {_iso(ms[at])}) is earlier than "
            f"row {label(at - 1)} ({_iso(ms[at - 1])}); sort by {time_column!r} first "
            f"(df.sort_values({time_column!r}, kind='stable')). Nothing was written."
        )
    positions = np.arange(ms.size)
    run_start = np.maximum.accumulate(np.where(np.r_[True, steps != 0], positions, 0))
    return positions - run_start


def _label(frame: pd.DataFrame, position: int) -> str:
    """A row's index label as the user wrote it (``5``, ``'2024-05-01'``), not numpy's repr."""
    label = frame.index[position]
    return repr(label.item() if hasattr(label, "item") else label)


def _iso(ms: int) -> str:
    return pd.Timestamp(int(ms), unit="ms", tz="UTC").isoformat()


def _columns(frame: pd.DataFrame, skip: Optional[str]) -> List[Tuple[str, list, Optional[np.ndarray]]]:
    """Each field column as Python values, with its missing-value mask (None when nothing is missing)."""
    out = []
    for name in frame.columns:
        if name == skip:
            continue
        column = frame[name]
        if pd.api.types.is_datetime64_any_dtype(column):
            values = [v.isoformat() if v is not pd.NaT else None for v in column]
        else:
            values = column.tolist()
        mask = column.isna().to_numpy()
        out.append((str(name), values, mask if mask.any() else None))
    return out


def _records(frame: pd.DataFrame, stream: str, skip: Optional[str], start: int, stop: int) -> List[Mapping]:
    columns = _columns(frame.iloc[start:stop], skip)
    records = []
    for i in range(stop - start):
        record = {name: values[i] for name, values, mask in columns if mask is None or not mask[i]}
        if not record:
            raise BackfillError(f"backfill: row {_label(frame, start + i)} has no field with a value")
        records.append(encode_record(stream, record))
    return records


async def _last_id(client: Any, stream: str) -> Tuple[int, int]:
    try:
        info = await client.xinfo_stream(stream)
    except Exception as exc:
        if "no such key" in str(exc).lower():
            return (-1, -1)
        raise
    return parse_stream_id(as_text(info.get("last-generated-id") or b"0-0") or "0-0")


async def backfill(
    target: Any,
    stream: str,
    data: Source,
    *,
    time_column: str = "timestamp",
    unit: str = "ms",
    chunk_size: int = 5000,
    keep_time_column: bool = False,
    resume: bool = False,
    progress: ProgressOption = True,
) -> BackfillResult:
    """Write ``data`` to ``stream`` with ids from ``time_column`` (see the module doc). ``target``: an App,
    a RedisConnection or a redis.asyncio client."""
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise BackfillError(f"backfill: chunk_size={chunk_size!r}: expected an integer >= 1")
    frame = load_frame(data)
    ms = times_ms(frame, time_column, unit)
    seq = assign_ids(ms, frame, time_column)
    client = await async_client(target)
    last_ms, last_seq = await _last_id(client, stream)
    begin = 0
    if ms.size and (ms[0] < last_ms or (ms[0] == last_ms and seq[0] <= last_seq)):
        if resume:
            newer = (ms > last_ms) | ((ms == last_ms) & (seq > last_seq))  # False... then True: ids grow
            begin = int(np.argmax(newer)) if newer.any() else len(frame)
        elif ms[0] == last_ms:
            seq = seq.copy()
            seq[: int(np.searchsorted(ms, last_ms, side="right"))] += last_seq + 1  # the same millisecond goes on
        else:
            raise BackfillError(
                f"backfill: stream {stream!r} already has entries up to {last_ms}-{last_seq} ({_iso(last_ms)}); "
                f"the first row is at {_iso(ms[0])}. Ids only grow: load into a new stream, trim it, or pass "
                "resume=True if this is the same data loaded before. Nothing was written."
            )
    skip = None if keep_time_column else time_column
    transport = Transport(client)
    started = time.monotonic()
    written, first_id, last_id = 0, None, None
    with Progress(progress, len(frame) - begin, f"backfill {stream}") as bar:
        for start in range(begin, len(frame), chunk_size):
            stop = min(start + chunk_size, len(frame))
            records = _records(frame, stream, skip, start, stop)
            commands = []
            for i, fields in zip(range(start, stop), records):
                command: list = ["XADD", stream, f"{ms[i]}-{seq[i]}"]
                for pair in fields.items():
                    command += pair
                commands.append(command)
            try:
                await transport.send(commands)
            except Exception as exc:
                raise BackfillError(
                    f"backfill: sending rows {start}-{stop - 1} to {stream!r} failed after {written} rows "
                    f"(last id {last_id}): {exc}. Run again with resume=True to continue."
                ) from exc
            first_id = first_id or f"{ms[start]}-{seq[start]}"
            last_id = f"{ms[stop - 1]}-{seq[stop - 1]}"
            written += stop - start
            bar.update(stop - start)
    return BackfillResult(stream, written, begin, first_id, last_id, time.monotonic() - started)
