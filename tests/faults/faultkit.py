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
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Dict, Iterable, List, Optional

import orjson

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


# -- stages: outputs and table changes exactly once -------------------------------


def stage_settled(client: Any, stream: str, group: str) -> bool:
    """True when the group has read every entry of ``stream`` and holds none pending (all committed)."""
    info = next((g for g in client.xinfo_groups(stream) if _text(g["name"]) == group), None)
    if info is None or info["pending"]:
        return False
    last = client.xinfo_stream(stream)["last-generated-id"]
    return _text(info["last-delivered-id"]) == _text(last)


def stored_table(client: Any, key: str) -> Dict[str, Any]:
    """A table's hash as {key: value}: fields are stored as ``<version>|<expires>|<json>``."""
    values = {}
    for name, raw in client.hgetall(key).items():
        body = raw.split(b"|", 2)[2]
        if body:  # an empty body is a deleted key
            values[_text(name)] = orjson.loads(body)
    return values


@dataclass
class StageResult(FaultResult):
    wrong: Dict[str, Any] = field(default_factory=dict)  # table key -> (stored, expected)
    unseen: int = 0  # confirmed by XADD, yet not in the input stream


def stage_tally(
    fault: str, client: Any, stream: str, table_key: Optional[str], confirmed: Iterable[int], started: float
) -> StageResult:
    """Record one row for a stage ``{"seq": n}`` -> ``{"seq": n}`` with ``r<n % 10>`` += 1, ``sum`` += n.

    Exactly once is judged against the input entries themselves (XRANGE): a
    producer may have written a record twice after an ambiguous send, and
    then two outputs and two counts are right. ``lost``: input entries with
    no output; ``duplicates``: outputs beyond their input entries. The row
    names the table's state: exact, or the keys that differ from what the
    inputs imply (stored, expected).
    """
    inputs = Counter(int(fields[b"seq"]) for _, fields in client.xrange(stream))
    outputs = Counter(int(fields[b"seq"]) for _, fields in client.xrange(f"{stream}:out"))
    expected: Dict[str, Any] = {f"r{d}": 0 for d in range(10)}
    for seq, n in inputs.items():
        expected[f"r{seq % 10}"] += n
    expected["sum"] = sum(seq * n for seq, n in inputs.items())
    expected = {k: v for k, v in expected.items() if v}
    wrong: Dict[str, Any] = {}
    if table_key is not None:
        stored = stored_table(client, table_key)
        wrong = {k: (stored.get(k), v) for k, v in expected.items() if stored.get(k) != v}
        wrong.update({k: (v, None) for k, v in stored.items() if k not in expected})
    unseen = set(confirmed) - set(inputs)
    state = "no table" if table_key is None else "table exact" if not wrong else f"TABLE WRONG: {wrong}"
    if unseen:
        state += f"; {len(unseen)} CONFIRMED RECORDS MISSING FROM THE INPUT"
    result = StageResult(
        f"{fault} [{state}]",
        sum(inputs.values()),
        sum(outputs.values()),
        sum((inputs - outputs).values()),
        sum((outputs - inputs).values()),
        0,
        time.monotonic() - started,
        wrong=wrong,
        unseen=len(unseen),
    )
    RESULTS.append(result)
    return result


def check_stage(result: StageResult) -> None:
    check(result)
    assert not result.unseen, f"{result.fault}: {result.unseen} confirmed records are not in the input stream"
    assert not result.wrong, f"{result.fault}: table keys differ from what the inputs imply (stored, expected)"


def window_tally(
    fault: str, client: Any, stream: str, table_key: str, confirmed: Iterable[int], started: float, size: int = 100
) -> StageResult:
    """Record one row for the window stage of ``stage_app.py`` (tumbling ``size`` over the event time ``seq``).

    Each input entry must be counted once: in the row of a closed window (the output), in an open window (the
    committed state) or as late (committed per key). ``handled``: entries counted; ``lost``: input entries of a
    window that no row or state counts; ``duplicates``: entries counted beyond the inputs, and rows of a window
    written twice. Late entries are named in the row (the grace should leave none).
    """
    inputs = Counter(int(fields[b"seq"]) // size * size for _, fields in client.xrange(stream))
    rows = Counter()
    twice = 0
    seen = set()
    for _, fields in client.xrange(f"{stream}:out"):
        start = int(fields[b"start"])
        twice += start in seen
        seen.add(start)
        rows[start] += int(fields[b"n"])
    late = 0
    for value in stored_table(client, table_key).values():
        late += value["late"]
        for start, record in value["state"]["windows"]:
            rows[start] += record[0]
    counted = sum(rows.values()) + late
    missing = sum((inputs - rows).values())  # late entries are missing from their windows, and counted there
    lost = max(missing - late, 0)
    duplicates = sum((rows - inputs).values()) + twice + max(late - missing, 0)
    unseen = set(confirmed) - {int(fields[b"seq"]) for _, fields in client.xrange(stream)}
    state = f"{len(seen)} windows closed, {late} late"
    if unseen:
        state += f"; {len(unseen)} CONFIRMED RECORDS MISSING FROM THE INPUT"
    result = StageResult(
        f"{fault} [{state}]", sum(inputs.values()), counted, lost, duplicates, 0,
        time.monotonic() - started, unseen=len(unseen),
    )  # fmt: skip
    RESULTS.append(result)
    return result


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def table() -> str:
    header = (
        "| fault | produced | handled | lost | duplicates | dup bound | seconds |\n"
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"
    )
    return "\n".join([header, *(r.row() for r in RESULTS)])


async def kill_while_producing(
    sending: Any,
    kill_one: Callable[[], Awaitable[Any]],
    progress: Callable[[], int],
    next_step: Callable[[], int],
    *,
    timeout: float,
    max_kills: int,
    min_kills: int,
) -> int:
    """``await kill_one()`` at random moments while ``sending`` runs: each time ``progress()`` has grown by
    ``next_step()`` since the last kill. Then waits for ``sending`` and checks enough kills landed."""
    from tests.helpers import wait_until  # here: fault_app.py imports this module as a script, without tests/

    kills = 0
    while not sending.done() and kills < max_kills:
        target = progress() + next_step()
        await wait_until(lambda: progress() > target or sending.done(), timeout, what="progress before the next kill")
        if sending.done():
            break
        await kill_one()
        kills += 1
    await sending
    assert kills >= min_kills, f"only {kills} kills landed while producing"
    return kills
