"""What a stage's handlers produce in one read: outputs and table changes, held until the commit.

A stage (an agent with ``output=`` or ``tables=``) runs each handler call as
a *unit*: the entries it covers (one, or a batch agent's whole read), the
records it returned or emitted, and the table keys it read and wrote. Units
of one read form a ``ReadEffects``; the consumer commits it with the ack of
those entries in one step (``engine/commit.py``). A handler that raises
loses its unit: its outputs and table writes are dropped, the earlier units'
stay.

Tables reach the running unit through a context variable, so concurrent
consumers on one loop (``concurrency=N``) never see each other's work in
progress.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from streammachine.redis.records import encode_record

DELETED: Any = object()
"""A table write that removes the key."""

TableKey = Tuple[Any, str]  # (table, key): tables are hashable by identity


@dataclass(frozen=True)
class Emit:
    """A record for a stream other than the agent's ``output=``: ``return Emit("audit", {...})``."""

    stream: str
    record: Mapping[str, Any]


class Unit:
    """One handler call's effects: the entry ids it covers, its outputs, its table writes."""

    __slots__ = ("effects", "ids", "outputs", "writes")

    def __init__(self, effects: ReadEffects, ids: List[Any]) -> None:
        self.effects = effects
        self.ids = ids
        self.outputs: Sequence[Tuple[str, Mapping]] = ()
        self.writes: Dict[TableKey, Tuple[Any, Optional[bytes]]] = {}  # value (or DELETED) and its encoding

    def read(self, table: Any, key: str, copy: bool = True) -> Tuple[bool, Any]:
        """(found, value) of ``key`` as this unit sees it: its own writes, earlier units', then committed."""
        slot = (table, key)
        if slot in self.writes:
            value = self.writes[slot][0]
            return (False, None) if value is DELETED else (True, value)
        return self.effects.read(table, key, copy)

    def write(self, table: Any, key: str, value: Any, encoded: Optional[bytes]) -> None:
        self.effects.note_version(table, key)
        self.writes[(table, key)] = (value, encoded)


class ReadEffects:
    """The units of one read, and the table versions they relied on (checked at commit)."""

    __slots__ = ("default_stream", "tables", "units", "versions", "overlay")

    def __init__(self, default_stream: Optional[str], tables: Iterable[Any] = ()) -> None:
        self.default_stream = default_stream
        self.tables = frozenset(tables)  # the ones the agent declared: the only ones its units may change
        self.units: List[Unit] = []
        self.versions: Dict[TableKey, int] = {}  # every key read or written -> the version it had
        self.overlay: Dict[TableKey, Tuple[Any, Optional[bytes]]] = {}  # writes of the units that succeeded

    def begin(self, ids: List[Any]) -> Unit:
        return Unit(self, ids)

    def keep(self, unit: Unit, result: Any) -> None:
        """The unit's handler returned ``result``: its outputs and writes become part of the read."""
        unit.outputs = route(result, self.default_stream)
        self.overlay.update(unit.writes)
        self.units.append(unit)

    def acknowledge(self, ids: Iterable[Any]) -> None:
        """Entries to ack with the commit that have no effects (deleted while pending, skipped by policy)."""
        self.units.append(Unit(self, list(ids)))

    def note_version(self, table: Any, key: str) -> None:
        slot = (table, key)
        if slot not in self.versions:
            self.versions[slot] = table.committed_version(key)

    def read(self, table: Any, key: str, copy: bool = True) -> Tuple[bool, Any]:
        self.note_version(table, key)
        slot = (table, key)
        if slot in self.overlay:
            value = self.overlay[slot][0]
            return (False, None) if value is DELETED else (True, value)
        return table.committed_get(key, copy)

    @property
    def ids(self) -> List[Any]:
        return [entry_id for unit in self.units for entry_id in unit.ids]

    @property
    def empty(self) -> bool:
        return not self.units

    def has_state(self) -> bool:
        return bool(self.versions)


current_unit: ContextVar[Optional[Unit]] = ContextVar("streammachine_unit", default=None)


def route(result: Any, default_stream: Optional[str]) -> Sequence[Tuple[str, Mapping]]:
    """A handler's return value as (stream, encoded fields) pairs.

    None: nothing. A record (a dict): one output to ``default_stream``. An
    ``Emit``: one output to its stream. A list or tuple: each item as above.
    A bad record raises (naming the stream and field) in the handler's unit,
    so it fails that entry alone.
    """
    if result is None:
        return ()
    if type(result) is dict and default_stream is not None:  # the common case: one record to output=
        return ((default_stream, encode_record(default_stream, result)),)
    if isinstance(result, (list, tuple)):
        out: List[Tuple[str, Mapping]] = []
        for item in result:
            out.extend(route(item, default_stream))
        return out
    if isinstance(result, Emit):
        return ((result.stream, encode_record(result.stream, result.record)),)
    if default_stream is None:
        raise TypeError(
            f"the handler returned {type(result).__name__} {result!r:.80} but the agent has no output= stream: "
            "pass output=STREAM to @app.agent, or return Emit(stream, record)"
        )
    return ((default_stream, encode_record(default_stream, result)),)
