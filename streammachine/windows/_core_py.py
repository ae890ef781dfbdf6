"""Pure-Python window core: the twin of ``streammachine/_speedups/_windows.pyx``.

Same algorithms, same order of float operations, so both give identical
rows and identical snapshots (the parity tests hold them to it). A window
record is a flat list ``[n, doubles..., times..., custom states...]``
(see ``aggregates.Layout``).

Per key: ``clock`` (latest event time, -1 before the first entry) and,
by kind,

- buckets (tumbling/hopping): ``windows``, start -> record;
- session: ``sessions``, ``[start, end, record]`` sorted by start, and
  ``sealed``, the latest ``end + gap`` of a closed session;
- sliding and bars: ``pending``, ``(ts, values)`` not yet released, in
  time order (arrival order on ties); sliding keeps the entries in the
  window (``buffer`` from ``head``) as a two-stack queue: ``front[i]``
  aggregates ``buffer[i:mid]``, ``back`` aggregates ``buffer[mid:]``, so
  any mergeable aggregate slides in O(1) amortised; bars keep the bar in
  progress and its measure.

The watermark of a key is ``max(clock - grace, floor)``; ``floor`` is
raised by ``advance_to`` (quiet keys) and ``flush`` (end of data).

The record operations are in ``_records_py.py``, the snapshot side in
``_snapshot_py.py`` (mixed in).
"""

from __future__ import annotations

import math
from bisect import insort
from typing import Any, Dict, List, Optional

from streammachine.windows._snapshot_py import SnapshotOps
from streammachine.windows.spec import K_BARS, K_BUCKETS, K_SESSION, K_SLIDE_TIME, M_COUNT, M_FIELD
from streammachine.windows.values import EntryReader, key_name

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
_NAN = math.nan


def _sat(a: int, b: int) -> int:
    """a + b, saturating at the int64 maximum, as the compiled core computes it."""
    total = a + b
    return total if total <= INT64_MAX else INT64_MAX


def _pending_time(item):
    return item[0]


class _Key:
    __slots__ = (
        "name",
        "clock",
        "windows",
        "sessions",
        "sealed",
        "pending",
        "buffer",
        "front",
        "head",
        "mid",
        "back",
        "bar",
        "bar_start",
        "bar_end",
        "measure",
    )

    def __init__(self, name: str) -> None:
        self.name = name
        self.clock = -1
        self.windows: Dict[int, list] = {}
        self.sessions: List[list] = []
        self.sealed = INT64_MIN
        self.pending: List[tuple] = []
        self.buffer: List[tuple] = []
        self.front: List[Optional[list]] = []
        self.head = self.mid = 0
        self.back: Optional[list] = None
        self.bar: Optional[list] = None
        self.bar_start = self.bar_end = 0
        self.measure = 0.0


class WindowCore(SnapshotOps):
    """Window state and the update paths; the public API comes from ``WindowMethods``."""

    compiled = False

    def __init__(self, window: Any) -> None:
        plan = window.plan
        self.window = window
        self._reader = EntryReader(plan)
        self._kind = plan["kind"]
        self._size, self._step, self._gap, self._count = plan["size"], plan["step"], plan["gap"], plan["count"]
        self._measure, self._threshold = plan["measure"], plan["threshold"]
        self._measure_fields = plan["measure_fields"]
        self._grace, self._final = plan["grace"], plan["final"]
        self._updates, self._results, self._customs = plan["updates"], plan["results"], plan["customs"]
        self._blank = [0, *plan["d_init"], *plan["t_init"]]
        self._row_names = ("key", "start", "end") + plan["columns"]
        self.clear()

    def clear(self) -> None:
        """Forget every key, window and counter."""
        self._keys: Dict[Any, _Key] = {}
        self._names: List[str] = []
        self._floor = INT64_MIN
        self._entries = self._late = self._rejected = 0
        self._out: List[tuple] = []

    # -- counters --------------------------------------------------------------

    @property
    def entries(self) -> int:
        """Entries taken (late ones included)."""
        return self._entries

    @property
    def late(self) -> int:
        """Entries that belonged to something already closed (not counted there)."""
        return self._late

    @property
    def rejected(self) -> int:
        """Entries refused as invalid (bad key, time or value)."""
        return self._rejected

    @property
    def keys(self) -> List[str]:
        """Keys seen, in first-seen order."""
        return list(self._names)

    # -- input paths -----------------------------------------------------------

    def add(self, fields: Any, id: Any = None, stream: Any = None) -> list:
        """Take one entry; returns the rows it made emit. A bad entry raises ValueError (and is counted)."""
        self._add_one(fields, id, stream)
        return self._take_rows()

    def _add_pairs(self, entries: list, stream: Any, late: list, bad: list) -> None:
        """A read's ``(id, fields)`` pairs in order, all from ``stream``: late ids go to ``late``, bad entries
        to ``bad`` as (position, id, error, counted)."""
        for position, (entry_id, fields) in enumerate(entries):
            try:
                if self._add_one(fields, entry_id, stream):
                    late.append(entry_id)
            except (ValueError, TypeError) as exc:
                bad.append((position, entry_id, str(exc), isinstance(exc, ValueError)))

    def _add_one(self, fields: Any, entry_id: Any, stream: Any) -> bool:
        """Take one entry; True if it was late. A bad one raises ValueError (counted in ``rejected``)."""
        try:
            name, ts, values = self._reader.read(fields, entry_id, stream)
        except ValueError:
            self._rejected += 1
            raise
        self._entries += 1
        if self._apply(self._key(name), ts, values):
            self._late += 1
            return True
        return False

    def _add_rows(self, times, columns, valid, keys, names: Any, late_rows: list, bad_keys: list) -> None:
        """The array path (see arrays.prepare_arrays): rows not ``valid`` are skipped (reported by the caller).

        ``keys`` is one key name, intp codes into ``names``, or an object
        array resolved here (rows whose key is not text go to ``bad_keys``).
        """
        stamps = times.tolist()
        rows = list(zip(*[column.tolist() for column in columns])) if columns else [()] * len(stamps)
        ok = valid.tolist() if valid is not None else None
        # keys are created when a valid row first uses them, in row order, as the compiled core does
        one: Optional[str] = keys if isinstance(keys, str) else None
        codes = keys.tolist() if names is not None else None
        objects: Any = keys.tolist() if one is None and names is None else None
        cache: Dict[Any, Optional[_Key]] = {}
        for i, ts in enumerate(stamps):
            if ok is not None and not ok[i]:
                continue
            key: Optional[_Key]
            if one is not None:
                key = self._key(one)
            elif codes is not None:
                key = self._key(names[codes[i]])
            else:
                value = objects[i]
                try:
                    key = (
                        cache[value] if value in cache else cache.setdefault(value, self._key(key_name(value, "keys")))
                    )
                except (TypeError, ValueError):  # unhashable, or not text
                    key = None
                if key is None:
                    bad_keys.append(i)
                    continue
            self._entries += 1
            if self._apply(key, ts, tuple(v + 0.0 for v in rows[i])):
                self._late += 1
                late_rows.append(i)

    def _advance(self, now_ms: int) -> None:
        """Raise every key's clock to ``now_ms`` (wall-clock closing for quiet keys): closes what it passes."""
        watermark = now_ms - self._grace
        if watermark > self._floor:
            self._floor = watermark
        for name in self._names:
            key = self._keys[name]
            self._close(key, max(key.clock - self._grace, self._floor))

    def _flush(self) -> None:
        """End of data: close every window, release every entry, emit bars in progress; later entries are late."""
        self._floor = INT64_MAX
        for name in self._names:
            key = self._keys[name]
            self._close(key, INT64_MAX)
            if self._kind == K_BARS and key.bar is not None:
                if self._final:
                    self._emit(key, key.bar_start, key.bar_end, key.bar)
                key.bar, key.measure = None, 0.0

    # -- the kinds -------------------------------------------------------------

    def _apply(self, key: _Key, ts: int, values) -> bool:
        """Add one valid entry; True if it was late."""
        watermark = key.clock - self._grace
        if watermark < self._floor:
            watermark = self._floor
        kind = self._kind
        if kind == K_BUCKETS:
            late = self._add_buckets(key, ts, values, watermark)
        elif kind == K_SESSION:
            late = self._add_session(key, ts, values, watermark)
        else:
            if ts < watermark:
                return True
            insort(key.pending, (ts, values), key=_pending_time)
            late = False
        if ts > key.clock:
            key.clock = ts
            raised = ts - self._grace
            if raised > watermark:
                watermark = raised
                if kind <= K_SESSION:
                    self._close(key, watermark)
        if kind > K_SESSION:
            self._release(key, watermark)
        return late

    def _close(self, key: _Key, watermark: int) -> None:
        kind = self._kind
        if kind == K_BUCKETS:
            windows, size = key.windows, self._size
            if windows and _sat(min(windows), size) <= watermark:
                for start in sorted(windows):
                    if _sat(start, size) > watermark:
                        break
                    record = windows.pop(start)
                    if self._final:
                        self._emit(key, start, _sat(start, size), record)
        elif kind == K_SESSION:
            sessions, gap = key.sessions, self._gap
            while sessions and _sat(sessions[0][1], gap) < watermark:
                start, end, record = sessions.pop(0)
                if _sat(end, gap) > key.sealed:
                    key.sealed = _sat(end, gap)
                if self._final:
                    self._emit(key, start, end, record)
        else:
            self._release(key, watermark)

    def _add_buckets(self, key: _Key, ts: int, values, watermark: int) -> bool:
        size, step, windows = self._size, self._step, key.windows
        newest = ts - ts % step
        start = newest - size + step
        late = False
        while start <= newest:
            end = _sat(start, size)
            if end <= watermark:
                late = True
            else:
                record = windows.get(start)
                if record is None:
                    record = windows[start] = self._new_record()
                self._update(record, ts, values)
                if not self._final:
                    self._emit(key, start, end, record)
            start += step
        return late

    def _add_session(self, key: _Key, ts: int, values, watermark: int) -> bool:
        gap, sessions = self._gap, key.sessions
        if ts <= key.sealed:
            return True
        i = 0
        while i < len(sessions) and sessions[i][0] <= ts:
            i += 1
        before = sessions[i - 1] if i > 0 and ts <= _sat(sessions[i - 1][1], gap) else None
        after = sessions[i] if i < len(sessions) and ts >= sessions[i][0] - gap else None
        if before is not None:
            self._update(before[2], ts, values)
            if ts > before[1]:
                before[1] = ts
            if after is not None:
                before[2] = self._merge(before[2], after[2])
                before[1] = after[1]
                del sessions[i]
            target = before
        elif after is not None:
            self._update(after[2], ts, values)
            after[0] = ts
            target = after
        else:
            if _sat(ts, gap) < watermark:
                return True
            record = self._new_record()
            self._update(record, ts, values)
            target = [ts, ts, record]
            sessions.insert(i, target)
        if not self._final:
            self._emit(key, target[0], target[1], target[2])
        return False

    def _release(self, key: _Key, watermark: int) -> None:
        pending = key.pending
        while pending and pending[0][0] <= watermark:
            ts, values = pending.pop(0)
            if self._kind == K_BARS:
                self._bar(key, ts, values)
            else:
                self._slide(key, ts, values)

    def _slide(self, key: _Key, ts: int, values) -> None:
        buffer = key.buffer
        buffer.append((ts, values))
        key.front.append(None)
        if key.back is None:
            key.back = self._new_record()
        self._update(key.back, ts, values)
        if self._kind == K_SLIDE_TIME:
            limit = ts - self._size
            while buffer[key.head][0] <= limit:
                self._pop_front(key)
            start = limit
        else:
            while len(buffer) - key.head > self._count:
                self._pop_front(key)
            start = buffer[key.head][0]
        front = key.front[key.head]
        record = key.back if front is None else self._merge(front, key.back)
        self._emit(key, start, ts, record)
        if key.head >= 4096 and key.head * 2 >= len(buffer):  # compact: drop what left the window
            del buffer[: key.head], key.front[: key.head]
            key.mid -= key.head
            key.head = 0

    def _pop_front(self, key: _Key) -> None:
        if key.head == key.mid:  # front used up: the back becomes the front (suffix aggregates)
            buffer, front, end = key.buffer, key.front, len(key.buffer)
            suffix = None
            for i in range(end - 1, key.head - 1, -1):
                single = self._new_record()
                self._update(single, buffer[i][0], buffer[i][1])
                suffix = single if suffix is None else self._merge(single, suffix)
                front[i] = suffix
            key.mid = end
            key.back = self._new_record()
        key.front[key.head] = None
        key.head += 1

    def _bar(self, key: _Key, ts: int, values) -> None:
        if key.bar is None:
            key.bar = self._new_record()
            key.bar_start = ts
        self._update(key.bar, ts, values)
        key.bar_end = ts
        if self._measure == M_COUNT:
            key.measure += 1.0
        elif self._measure == M_FIELD:
            key.measure += values[self._measure_fields[0]]
        else:
            key.measure += values[self._measure_fields[0]] * values[self._measure_fields[1]]
        closes = key.measure >= self._threshold
        if closes or not self._final:
            self._emit(key, key.bar_start, ts, key.bar)
        if closes:
            key.bar, key.measure = None, 0.0

    # -- keys ------------------------------------------------------------------

    def _key(self, name: str) -> _Key:
        key = self._keys.get(name)
        if key is None:
            key = self._keys[name] = _Key(name)
            self._names.append(name)
        return key
