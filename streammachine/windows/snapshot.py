"""The snapshot format both window cores share: their whole state as plain JSON-able data.

::

    {"format": 1, "window": {...Window.describe()...},
     "floor": null,                        # watermark set by advance_to/flush; null: never
     "entries": 1234, "late": 0, "rejected": 2,
     "keys": [                             # first-seen order
       {"key": "AAPL", "clock": 1700000059000,       # -1: no entry yet
        # tumbling/hopping:
        "windows": [[start, record], ...],           # by start
        # session:
        "sealed": null, "sessions": [[start, end, record], ...],
        # sliding and bars: entries not yet released, in release order
        "pending": [[ts, [value, ...]], ...],
        # sliding: the entries in the window, and how many of them form the two-stack's front
        "buffer": [[ts, [value, ...]], ...], "front": 3,
        # bars: the bar in progress (null: none)
        "bar": record, "bar_start": ts, "bar_end": ts, "measure": 12.5},
       ...]}

A record is ``[n, doubles..., times..., custom states...]`` (see
``aggregates.Layout``); a double that is not finite is written as the
string "inf", "-inf" or "nan" (JSON has none). Everything else the cores
hold is derived from this (the two-stack's aggregates are recomputed in the
same order), so a restored state goes on exactly as the original would.
``parse`` checks a snapshot before a core takes it: a bad one is refused
whole, with a ValueError naming what is wrong.
"""

from __future__ import annotations

import copy
import json
import math
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

from streammachine.redis.entries import _short
from streammachine.windows.spec import K_BARS, K_BUCKETS, K_SESSION, K_SLIDE_COUNT, K_SLIDE_TIME

FORMAT = 1
_INT64_MIN = -(2**63)
_SPELLED = {"inf": math.inf, "-inf": -math.inf, "nan": math.nan}


def build(state: Any) -> dict:
    floor = state._floor_value()
    return {
        "format": FORMAT,
        "window": state.window.describe(),
        "floor": None if floor == _INT64_MIN else floor,
        "entries": state.entries,
        "late": state.late,
        "rejected": state.rejected,
        "keys": key_items(state),
    }


def key_items(state: Any, names: Optional[Iterable[str]] = None) -> List[dict]:
    """The snapshot items of ``names`` (default: every key), as ``build`` writes them; unknown names are left out."""
    plan = state.window.plan
    doubles = range(1, 1 + len(plan["d_init"]))
    customs = 1 + len(plan["d_init"]) + len(plan["t_init"]) if plan["customs"] else 0
    keys = []
    for item in state._export() if names is None else state._export(list(names)):
        for field in ("windows", "sessions"):
            if field in item:
                item[field] = [[*row[:-1], _record_out(row[-1], doubles, customs)] for row in item[field]]
        if item.get("bar") is not None:
            item["bar"] = _record_out(item["bar"], doubles, customs)
        if "measure" in item:
            item["measure"] = _double_out(item["measure"])
        keys.append(item)
    return keys


def replace_keys(state: Any, items: Mapping[str, Optional[dict]]) -> None:
    """Give the keys named in ``items`` that item's state (None: forget the key); the other keys stay as they are.

    The stage binding uses it to bring keys back to their committed state (a unit that failed, a commit refused).
    """
    snapshot = build(state)
    kept = [item for item in snapshot["keys"] if item["key"] not in items]
    snapshot["keys"] = kept + [item for item in items.values() if item is not None]
    state.restore(snapshot)


def _record_out(record: list, doubles: range, customs: int) -> list:
    """A copy (custom states deep-copied: a live state changes later) with non-finite doubles spelled out."""
    out = list(record)
    for i in doubles:
        out[i] = _double_out(out[i])
    if customs:
        out[customs:] = [copy.deepcopy(v) for v in out[customs:]]
    return out


def _double_out(value: float) -> Any:
    return value if math.isfinite(value) else repr(value)


def parse(snapshot: Any, state: Any) -> Tuple[list, int, int, int, int]:
    """Check ``snapshot`` for ``state``'s window; returns ``(keys, floor, entries, late, rejected)`` for ``_load``."""
    if isinstance(snapshot, (str, bytes, bytearray, memoryview)):
        try:
            snapshot = json.loads(snapshot if isinstance(snapshot, str) else bytes(snapshot))
        except ValueError as exc:
            raise ValueError(f"window snapshot: not valid JSON ({exc})") from None
    if not isinstance(snapshot, dict):
        raise ValueError(f"window snapshot: expected a dict, got {type(snapshot).__name__}")
    if snapshot.get("format") != FORMAT:
        raise ValueError(f"window snapshot: format {_short(snapshot.get('format'))}, expected {FORMAT}")
    described = state.window.describe()
    if snapshot.get("window") != described:
        raise ValueError(
            f"window snapshot: taken from another window {_short(snapshot.get('window'))}; this one is {described}"
        )
    plan = state.window.plan
    checker = _Checker(plan)
    counters = [_int(snapshot.get(name), name, 0) for name in ("entries", "late", "rejected")]
    floor = snapshot.get("floor")
    floor = _INT64_MIN if floor is None else _int(floor, "floor", _INT64_MIN)
    raw_keys = snapshot.get("keys")
    if not isinstance(raw_keys, list):
        raise ValueError("window snapshot: 'keys' must be a list")
    keys, seen = [], set()
    for item in raw_keys:
        if not isinstance(item, dict) or not isinstance(item.get("key"), str):
            raise ValueError(f"window snapshot: bad key entry {_short(item)}")
        name = item["key"]
        if name in seen:
            raise ValueError(f"window snapshot: key {name!r} twice")
        seen.add(name)
        keys.append(checker.key(name, item))
    entries, late, rejected = counters
    return keys, floor, entries, late, rejected


class _Checker:
    def __init__(self, plan: dict) -> None:
        self.kind = plan["kind"]
        self.doubles = len(plan["d_init"])
        self.times = len(plan["t_init"])
        self.customs = len(plan["customs"])
        self.fields = len(plan["fields"])

    def key(self, name: str, item: dict) -> dict:
        where = f"key {name!r}"
        out: Dict[str, Any] = {"key": name, "clock": _int(item.get("clock"), f"{where}: clock", -1)}
        kind = self.kind
        if kind == K_BUCKETS:
            out["windows"] = [
                [_int(s, f"{where}: window start", _INT64_MIN), self.record(r, where)]
                for s, r in _pairs(item.get("windows"), where, "windows", 2)
            ]
        elif kind == K_SESSION:
            sealed = item.get("sealed")
            out["sealed"] = _INT64_MIN if sealed is None else _int(sealed, f"{where}: sealed", _INT64_MIN)
            out["sessions"] = [
                [_int(s, f"{where}: session start", 0), _int(e, f"{where}: session end", 0), self.record(r, where)]
                for s, e, r in _pairs(item.get("sessions"), where, "sessions", 3)
            ]
        else:
            out["pending"] = self.entries(item.get("pending"), where, "pending")
            if kind in (K_SLIDE_TIME, K_SLIDE_COUNT):
                out["buffer"] = self.entries(item.get("buffer"), where, "buffer")
                out["front"] = _int(item.get("front"), f"{where}: front", 0)
                if out["front"] > len(out["buffer"]):
                    raise ValueError(f"window snapshot: {where}: front {out['front']} exceeds the buffer")
            elif kind == K_BARS:
                bar = item.get("bar")
                out["bar"] = None if bar is None else self.record(bar, where)
                out["bar_start"] = _int(item.get("bar_start"), f"{where}: bar_start", 0)
                out["bar_end"] = _int(item.get("bar_end"), f"{where}: bar_end", 0)
                out["measure"] = _double(item.get("measure"), f"{where}: measure")
        return out

    def record(self, raw: Any, where: str) -> list:
        size = 1 + self.doubles + self.times + self.customs
        if not isinstance(raw, list) or len(raw) != size:
            raise ValueError(f"window snapshot: {where}: expected a record of {size} items, got {_short(raw)}")
        out: List[Any] = [_int(raw[0], f"{where}: record count", 1)]
        out += [_double(v, f"{where}: record value") for v in raw[1 : 1 + self.doubles]]
        out += [_int(v, f"{where}: record time", -1) for v in raw[1 + self.doubles : 1 + self.doubles + self.times]]
        out += raw[1 + self.doubles + self.times :]
        return out

    def entries(self, raw: Any, where: str, what: str) -> List[tuple]:
        out = []
        for ts, values in _pairs(raw, where, what, 2):
            if not isinstance(values, list) or len(values) != self.fields:
                raise ValueError(
                    f"window snapshot: {where}: {what}: expected {self.fields} values, got {_short(values)}"
                )
            checked = tuple(_double(v, f"{where}: {what} value") for v in values)
            if not all(math.isfinite(v) for v in checked):
                raise ValueError(f"window snapshot: {where}: {what}: values must be finite, got {_short(values)}")
            out.append((_int(ts, f"{where}: {what} time", 0), checked))
        return out


def _pairs(raw: Any, where: str, what: str, width: int) -> list:
    if not isinstance(raw, list) or not all(isinstance(r, list) and len(r) == width for r in raw):
        raise ValueError(f"window snapshot: {where}: '{what}' must be a list of {width}-item lists, got {_short(raw)}")
    return raw


def _int(value: Any, what: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value < 2**63:
        raise ValueError(f"window snapshot: {what}={_short(value)}: expected an integer >= {minimum}")
    return value


def _double(value: Any, what: str) -> float:
    if isinstance(value, str) and value in _SPELLED:
        return _SPELLED[value]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"window snapshot: {what}={_short(value)}: expected a number")
    return float(value)
