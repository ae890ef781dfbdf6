"""Bookkeeping for the fault suite: who produced what, who handled what, the table.

Handlers record every seq they handle in a ``Ledger``: an O_APPEND file, one
``write()`` per record, so a record survives a SIGKILL of its writer the
moment the handler returns and is independent of the Redis server under
fault. The producer counts a seq as produced only once XADD confirmed it.
``Ledger``, ``Producer`` and ``seq_of`` are public (streammachine.testing),
for users' own fault tests.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from typing import Iterable, List

from streammachine.testing import Ledger, Producer, seq_of  # noqa: F401  (re-exported for the fault tests)

RESULTS: List[FaultResult] = []


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
