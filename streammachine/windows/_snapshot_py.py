"""The pure-Python core's side of snapshots: its state out as plain data, and back (the format: ``snapshot.py``)."""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional

from streammachine.windows._records_py import RecordOps
from streammachine.windows.spec import K_BARS, K_BUCKETS, K_SESSION

INT64_MIN = -(2**63)


class SnapshotOps(RecordOps):
    """Mixed into ``WindowCore`` (with the record operations): needs its keys, ``_floor`` and counters."""

    _kind: int
    _floor: int
    _keys: Dict[Any, Any]
    _names: list
    clear: Callable[[], None]
    _key: Callable[[str], Any]

    # -- snapshots (the format is in snapshot.py) -------------------------------

    def _floor_value(self) -> int:
        return self._floor

    def _export(self, names: Optional[Any] = None) -> list:
        kind, out = self._kind, []
        for name in self._names if names is None else [n for n in names if n in self._keys]:
            key = self._keys[name]
            item: Dict[str, Any] = {"key": name, "clock": key.clock}
            if kind == K_BUCKETS:
                item["windows"] = [[start, key.windows[start]] for start in sorted(key.windows)]
            elif kind == K_SESSION:
                item["sealed"] = None if key.sealed == INT64_MIN else key.sealed
                item["sessions"] = [[start, end, record] for start, end, record in key.sessions]
            else:
                item["pending"] = [[ts, list(values)] for ts, values in key.pending]
                if kind == K_BARS:
                    item.update(bar=key.bar, bar_start=key.bar_start, bar_end=key.bar_end, measure=key.measure)
                else:
                    item["buffer"] = [[ts, list(values)] for ts, values in key.buffer[key.head :]]
                    item["front"] = key.mid - key.head
            out.append(item)
        return out

    def _load(self, keys: list, floor: int, entries: int, late: int, rejected: int) -> None:
        """Replace the state with checked snapshot data (see snapshot.parse)."""
        self.clear()
        kind = self._kind
        for item in keys:
            key = self._key(item["key"])
            key.clock = item["clock"]
            if kind == K_BUCKETS:
                key.windows = {start: record for start, record in item["windows"]}
            elif kind == K_SESSION:
                key.sealed = item["sealed"]
                key.sessions = [list(session) for session in item["sessions"]]
            else:
                key.pending = list(item["pending"])
                if kind == K_BARS:
                    key.bar, key.bar_start, key.bar_end = item["bar"], item["bar_start"], item["bar_end"]
                    key.measure = item["measure"]
                else:
                    self._rebuild_slide(key, item["buffer"], item["front"])
        self._floor = floor
        self._entries, self._late, self._rejected = entries, late, rejected

    def _rebuild_slide(self, key: Any, buffer: list, front: int) -> None:
        """The two-stack exactly as it was: front suffixes over buffer[:front], back over the rest, in order."""
        key.buffer = list(buffer)
        key.front = [None] * len(buffer)
        key.head = 0
        key.mid = front
        key.back = back = self._new_record() if buffer else None
        for ts, values in buffer[front:]:
            self._update(back, ts, values)  # type: ignore[arg-type]  # not None: buffer[front:] is not empty
        suffix = None
        for i in range(front - 1, -1, -1):
            single = self._new_record()
            self._update(single, buffer[i][0], buffer[i][1])
            suffix = single if suffix is None else self._merge(single, suffix)
            key.front[i] = suffix
