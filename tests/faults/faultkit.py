"""Bookkeeping for the fault suite: who produced what, who handled what, the table.

Handlers record every seq they handle in a ``Ledger``: an O_APPEND file, one
``write()`` per record, so a record survives a SIGKILL of its writer the
moment the handler returns and is independent of the Redis server under
fault. The producer counts a seq as produced only once XADD confirmed it.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, List, Optional

from redis.exceptions import RedisError

RESULTS: List[FaultResult] = []


class Ledger:
    """Append-only record of handled seqs, safe across forks and SIGKILL."""

    def __init__(self, path: os.PathLike | str) -> None:
        self.path = Path(path)
        self.path.touch()
        self._fd: Optional[int] = None
        self._pid: Optional[int] = None

    def record(self, seq) -> None:
        if self._pid != os.getpid():  # first use in this (possibly forked) process
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            self._pid = os.getpid()
        os.write(self._fd, (seq if isinstance(seq, bytes) else str(seq).encode()) + b"\n")

    def counts(self) -> Counter:
        return Counter(int(line) for line in self.path.read_bytes().split() if line)

    def unique(self) -> int:
        return len(self.counts())


def seq_of(message) -> int:
    return int(message.fields[b"seq"])


class Producer:
    """Sends ``{"seq": i}`` records in small batches through ``App.send_batch``, retrying through outages.

    ``confirmed``: seqs whose XADD returned. ``ambiguous``: records of a
    batch that failed (some may have reached the stream, and are sent again).
    """

    def __init__(self, app, stream: str, *, batch: int = 20, interval: float = 0.01, pad: int = 32) -> None:
        self.app, self.stream, self.batch, self.interval = app, stream, batch, interval
        self.pad = "x" * pad
        self.confirmed: set = set()
        self.ambiguous = 0
        self.failures = 0
        self.next_seq = 0

    async def send(self, n: int, deadline: float = 60.0) -> None:
        stop_at = time.monotonic() + deadline
        end = self.next_seq + n
        while self.next_seq < end:
            seqs = list(range(self.next_seq, min(end, self.next_seq + self.batch)))
            records = [{"seq": s, "pad": self.pad} for s in seqs]
            while True:
                try:
                    await self.app.send_batch(self.stream, records)
                    break
                except (RedisError, OSError) as exc:
                    self.failures += 1
                    self.ambiguous += len(seqs)
                    if time.monotonic() > stop_at:
                        raise AssertionError(f"producer could not send for {deadline}s: {exc!r}") from exc
                    await asyncio.sleep(0.05)
            self.confirmed.update(seqs)
            self.next_seq = seqs[-1] + 1
            if self.interval:
                await asyncio.sleep(self.interval)


@dataclass
class FaultResult:
    fault: str
    produced: int
    handled: int
    lost: int
    duplicates: int
    bound: int
    seconds: float

    def row(self) -> str:
        return (
            f"| {self.fault} | {self.produced} | {self.handled} | {self.lost} | {self.duplicates} | "
            f"{self.bound} | {self.seconds:.1f} |"
        )


def tally(
    fault: str, produced: Iterable[int], handled: Counter, bound: int, started: float, extra_handled: Iterable[int] = ()
) -> FaultResult:
    """Record one table row and return it; ``extra_handled`` are seqs accounted for elsewhere (dead-lettered)."""
    produced = set(produced)
    counts = Counter(handled)
    counts.update(extra_handled)
    lost = len(produced - set(counts))
    duplicates = sum(counts.values()) - len(counts)
    result = FaultResult(
        fault, len(produced), sum(counts.values()), lost, duplicates, bound, time.monotonic() - started
    )
    RESULTS.append(result)
    return result


def check(result: FaultResult) -> None:
    assert result.lost == 0, f"{result.fault}: {result.lost} of {result.produced} produced records were never handled"
    assert result.duplicates <= result.bound, (
        f"{result.fault}: {result.duplicates} duplicates, over the bound of {result.bound}"
    )


def table() -> str:
    header = (
        "| fault | produced | handled | lost | duplicates | dup bound | seconds |\n"
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"
    )
    return "\n".join([header, *(r.row() for r in RESULTS)])
