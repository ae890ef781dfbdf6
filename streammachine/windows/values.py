"""Reading a window's inputs from an entry or from arrays: key, event time, numbers.

The rules and the error messages live here once, for both cores: every
error is a ValueError naming the field, the value and what was expected.
"""

from __future__ import annotations

import math
from typing import Any, Dict, NamedTuple, Optional, Tuple

from streammachine.ohlc.ticks import both_spellings
from streammachine.redis.entries import MAX_TIMESTAMP_MS, _short, as_text, parse_stream_id_timestamp


class Rejected(NamedTuple):
    """An entry (or array row) that was not taken, and why."""

    position: int
    id: Any
    error: str


def key_name(value: Any, field: Optional[str]) -> str:
    """A key as str: a str as is, bytes decoded as UTF-8."""
    if type(value) is str:
        return value
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError(f"key field {field!r}={_short(value)}: expected UTF-8 text") from None
    if isinstance(value, str):
        return str(value)
    what = f"key field {field!r}" if field else "stream name (key)"
    raise ValueError(f"{what}={_short(value)}: expected text (str or bytes)")


def number(raw: Any, field: str) -> float:
    """A field's value as a finite float: numbers as they are, text through ``float()``."""
    if type(raw) is float:
        value = raw
    elif isinstance(raw, bool) or raw is None:
        raise ValueError(f"field {field!r}={_short(raw)}: expected a finite number")
    else:
        try:
            value = float(raw)
        except (TypeError, ValueError, OverflowError):
            raise ValueError(f"field {field!r}={_short(raw)}: expected a finite number") from None
    if value - value != 0.0:
        raise ValueError(f"field {field!r}={_short(raw)}: expected a finite number")
    return value + 0.0


def stamp(raw: Any, field: str) -> int:
    """Event time in epoch milliseconds from a field: an integer (or integral text/float) in [0, 2**63)."""
    if type(raw) is int and 0 <= raw <= MAX_TIMESTAMP_MS:
        return raw
    if isinstance(raw, bool) or raw is None:
        raise ValueError(f"time field {field!r}={_short(raw)}: expected integer epoch milliseconds")
    try:
        value = int(raw)
    except (TypeError, ValueError, OverflowError):
        try:
            as_float = float(raw)
        except (TypeError, ValueError, OverflowError):
            as_float = math.nan
        if not (math.isfinite(as_float) and as_float == int(as_float)):
            raise ValueError(f"time field {field!r}={_short(raw)}: expected integer epoch milliseconds") from None
        value = int(as_float)
    if not 0 <= value <= MAX_TIMESTAMP_MS:
        raise ValueError(f"time field {field!r}={_short(raw)}: expected epoch milliseconds in [0, 2**63)")
    return value


class EntryReader:
    """Reads ``(key, ts, values)`` from one entry's fields for a window plan."""

    __slots__ = ("key", "time", "fields", "_key", "_time", "_fields")

    def __init__(self, plan: Dict[str, Any]) -> None:
        self.key: Optional[str] = plan["key"]
        self.time: str = plan["time"]
        self.fields: Tuple[str, ...] = plan["fields"]
        self._key = both_spellings(self.key) if self.key else None
        self._time = None if self.time == "id" else both_spellings(self.time)
        self._fields = [both_spellings(name) for name in self.fields]

    def read(self, fields: Any, entry_id: Any, stream: Any) -> Tuple[str, int, tuple]:
        if not hasattr(fields, "get"):
            raise ValueError(f"entry {_short(entry_id)}: fields={_short(fields)}: expected a mapping of field -> value")
        if self._key is None:
            name = "" if stream is None else key_name(as_text(stream), None)
        else:
            name = key_name(_get(fields, self._key, "key field"), self.key)
        if self._time is None:
            if entry_id is None:
                raise ValueError("id=None: this window takes event time from the stream id; pass id= (or time=FIELD)")
            ts = parse_stream_id_timestamp(entry_id)
        else:
            ts = stamp(_get(fields, self._time, "time field"), self.time)
        values = tuple(number(_get(fields, spelled, "field"), spelled[0]) for spelled in self._fields)
        return name, ts, values


def _get(fields: Any, spelled: Tuple[str, bytes], what: str) -> Any:
    value = fields.get(spelled[1])
    if value is None:
        value = fields.get(spelled[0])
        if value is None:
            raise ValueError(f"{what} {spelled[0]!r} missing: every entry needs it")
    return value
