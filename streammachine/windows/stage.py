"""A window as a stage: ``@app.agent(stream, window=Window..., output=...)``.

The agent's handler becomes a ``WindowStage``: each read goes into the
window, the rows it emits go to the function the decorator wrapped (its
return value is routed like any stage's: ``output=``, ``Emit``), and the
window's state is committed with the ack of the entries, in the same Lua
commit as the outputs (``engine/commit.py``). The state lives in a table of
the app (``app.table``), one table key per window key:

    {"token": 8273, "late": 3, "state": <that key's snapshot item>}

The in-memory core is a cache of that table. ``token`` names the state the
core holds for the key: before a read touches a key, the stage compares the
token the table shows (committed, or written by an earlier unit of the same
read) with its own, and takes the table's state back into the core when
they differ. That one rule covers every way the core can run ahead of what
was committed: a unit that raised (its writes dropped), a commit refused
(a table conflict, entries acknowledged meanwhile) and handled again, a
restart or a hot swap (the core starts empty), another process that
committed the key. Each key read is version-checked by the commit, so two
consumers of one window never count an entry twice.
"""

from __future__ import annotations

import hashlib
import inspect
import itertools
import json
import logging
import secrets
import time
from collections import Counter, OrderedDict
from typing import Any, Callable, Dict, Iterable, List, Optional

from streammachine.redis.entries import as_text
from streammachine.windows.snapshot import key_items, replace_keys
from streammachine.windows.values import key_name

log = logging.getLogger("streammachine.windows")

_CHANGING: Any = object()  # a token no table holds
RECENT_ROWS = 5_000  # rows kept in memory for live_window (the latest per window)


def table_name(stream: str, agent: str, window: Any) -> str:
    """The table holding a window stage's state: in the input stream's cluster slot, named after the window.

    A changed window (another size, other aggregates) gets a new table, so a re-run cell that changes
    the window starts fresh, and one that does not keeps its state.
    """
    digest = hashlib.sha1(json.dumps(window.describe(), sort_keys=True).encode()).hexdigest()[:10]
    opening = stream.find("{")
    tagged = opening != -1 and stream.find("}", opening + 2) != -1  # a non-empty {tag}: keep the stream's slot
    slot = stream if tagged else "{" + stream + "}"
    return f"{slot}:window:{agent}:{digest}"


class WindowStage:
    """The handler of a window agent (made by ``Window.stage_handler``; see the module doc)."""

    batch = True
    takes_entries = True  # called with a read's (id, fields) pairs, not Messages (engine/stage.py)

    def __init__(self, window: Any, callback: Optional[Callable], table: Any, stream: str) -> None:
        if callback is not None and not callable(callback):
            raise TypeError(f"window agent on {stream!r}: {callback!r} is not callable")
        self.window = window
        self.callback = callback
        self.callback_is_async = callback is not None and inspect.iscoroutinefunction(callback)
        self.table = table
        self.stream = stream
        self.state = window.start()
        self._tokens: Dict[str, Any] = {}  # key -> token of the state the core holds for it
        self._next_token = itertools.count(secrets.randbits(40) << 20).__next__
        self._key_field = window.plan["key"]
        self._key_spellings = (self._key_field.encode(), self._key_field) if self._key_field else None
        self.rejected = 0  # entries refused as invalid, in this process (they fail and take the agent's policy)
        self.recent: OrderedDict = OrderedDict()  # (key, start, end) -> the latest row: what live_window shows
        self.revision = 0
        self.__name__ = getattr(callback, "__name__", "window")
        self.__qualname__ = getattr(callback, "__qualname__", self.__name__)
        self.__module__ = getattr(callback, "__module__", __name__)

    # -- the agent's handler -------------------------------------------------

    async def __call__(self, entries: List[Any]) -> Any:
        """Take a read's ``(id, fields)`` entries (Messages too: a replay's wrapper hands those over, replay.py)."""
        if entries and hasattr(entries[0], "topic"):
            entries = [m.data for m in entries if m.data]
        touched = self._keys_of(entries)
        self._sync(touched)
        self._dirty(touched)
        rows = self.state.add_entries(entries, stream=self.stream)
        if rows.rejected:
            # a bad entry fails (the consumer hands a failed batch over one entry at a time, so it fails
            # alone and takes the agent's on_error policy: retried, then dead-lettered); nothing is stored
            self.rejected += len(rows.rejected) if len(entries) == 1 else 0
            raise ValueError(f"window on {self.stream!r}: {rows.rejected[0].error}")
        late: Counter = Counter()
        if rows.late:
            key_of_id = {as_text(entry_id): self._key_of(fields) for entry_id, fields in entries}
            late.update(key_of_id.get(as_text(entry_id)) for entry_id in rows.late)
        self._store(touched, late)
        return await self._emit(rows)

    async def advance(self) -> Any:
        """Close, by the wall clock, what the windows of quiet keys have passed (the ``wall_clock=`` hook)."""
        names = list(dict.fromkeys([*self.table.keys(), *self.state.keys]))
        self._sync(names)
        self._dirty(names)
        before = {item["key"]: item for item in key_items(self.state)}
        rows = self.state.advance_to(int(time.time() * 1000))
        changed = []
        for item in key_items(self.state):
            if before.get(item["key"]) != item:
                changed.append(item["key"])
            else:  # as stored: the token it had
                stored = self.table.peek(item["key"])
                self._tokens[item["key"]] = None if stored is None else stored["token"]
        self._store(changed, Counter())
        return await self._emit(rows)

    # -- state ---------------------------------------------------------------

    def _keys_of(self, entries: List[Any]) -> List[str]:
        """The keys a read's entries touch (the raw values gathered first: a read has far fewer keys than entries)."""
        if self._key_spellings is None:
            return [self.stream] if entries else []
        spelled, text = self._key_spellings
        raw = {fields.get(spelled) or fields.get(text) for _, fields in entries}
        names = []
        for value in raw:
            try:
                if value is not None:
                    names.append(key_name(value, self._key_field))
            except ValueError:
                pass  # the core rejects its entries, with the reason
        return list(dict.fromkeys(names))

    def _key_of(self, fields: Any) -> Optional[str]:
        if self._key_spellings is None:
            return self.stream
        raw = fields.get(self._key_spellings[0])
        if raw is None:
            raw = fields.get(self._key_spellings[1])
        try:
            return None if raw is None else key_name(raw, self._key_field)
        except ValueError:
            return None  # the core rejects it, with the reason

    def _sync(self, names: Iterable[str]) -> None:
        """Take back the table's state of every key whose token differs from the core's."""
        stale: Dict[str, Optional[dict]] = {}
        for name in names:
            stored = self.table.peek(name)  # through the running unit: the commit checks its version
            token = None if stored is None else stored["token"]
            if self._tokens.get(name) != token:
                stale[name] = None if stored is None else stored["state"]
        if stale:
            replace_keys(self.state, stale)
            for name, item in stale.items():
                if item is None:
                    self._tokens.pop(name, None)
                else:
                    self._tokens[name] = self.table.peek(name)["token"]

    def _dirty(self, names: Iterable[str]) -> None:
        """The core is about to change these keys: until they are stored, their state is nobody's (a unit that
        fails in between leaves them to be taken back from the table)."""
        for name in names:
            self._tokens[name] = _CHANGING

    def _store(self, names: List[str], late: Counter) -> None:
        for item in key_items(self.state, names):
            name = item["key"]
            stored = self.table.peek(name)
            token = self._next_token()
            self.table[name] = {"token": token, "late": (stored["late"] if stored else 0) + late[name], "state": item}
            self._tokens[name] = token

    async def _emit(self, rows: list) -> Any:
        if not rows:
            return None
        recent = self.recent
        for row in rows:
            slot = (row["key"], row["start"], row["end"])
            recent.pop(slot, None)
            recent[slot] = row
        while len(recent) > RECENT_ROWS:
            recent.popitem(last=False)
        self.revision += 1
        if self.callback is None:
            return list(rows)
        result = self.callback(list(rows))
        if self.callback_is_async or inspect.isawaitable(result):
            result = await result
        return result

    # -- reporting -----------------------------------------------------------

    def status(self) -> Dict[str, Any]:
        """Committed late entries (all processes, across restarts), keys, and this process's counts."""
        values = [self.table.committed_get(key, copy=False)[1] for key in self.table.keys()]  # read, never changed
        return {
            "table": self.table.name,
            "keys": len(values),
            "late": sum(int(v.get("late", 0)) for v in values if isinstance(v, dict)),
            "entries": self.state.entries,
            "rejected": self.rejected,
            "implementation": "cython" if self.state.compiled else "python",
        }

    def rows(self) -> List[dict]:
        """The latest rows this process emitted (one per window), oldest first."""
        return list(self.recent.values())

    def adopt(self, previous: Any) -> None:
        """Take over what a handler it replaces (a re-run cell, same window) showed: its rows for live_window."""
        if isinstance(previous, WindowStage) and previous.table is self.table:
            self.recent = previous.recent
            self.revision = previous.revision + 1

    def rebind(self, table: Any, callback: Optional[Callable] = None) -> WindowStage:
        """The same window and callback over another table (a replay's fresh state)."""
        return WindowStage(self.window, self.callback if callback is None else callback, table, self.stream)

    def __repr__(self) -> str:
        return f"WindowStage({self.window!r}, table={self.table.name!r})"
