"""Where a consumer group reads: list groups, move one (XGROUP SETID), delete one; and stream trimming.

A position names the next entry the group will be handed:

- ``"start"``: the first entry of the stream (everything is read again);
- ``"end"``: only entries added from now on;
- an entry id (``1700000000000-3``, or ``1700000000000`` for ``-0``): that
  entry, inclusive, and what follows;
- a time: an ISO 8601 datetime (``2024-05-01T10:00:00Z``; without a zone it
  is UTC), epoch milliseconds via an id, or an age such as ``"90s ago"``,
  ``"15m ago"``, ``"2h ago"``, ``"1d ago"`` (also ``-15m``): the first entry
  at or after that time.

Redis stores the id of the last entry delivered, so the group is set to the
id just before the position. Entries already pending in the group stay
pending (their consumers take them back first) unless ``drop_pending``
acknowledges them. Every function is a coroutine over a ``redis.asyncio``
client (apps, tests); its ``_sync`` form runs the same coroutine over a plain
client (the CLI, the magics) through ``redis/sync.py``.
"""

from __future__ import annotations

import re
import time
from datetime import datetime, timedelta, timezone
from typing import Any, Dict, List, NamedTuple, Optional, Union

from streammachine._validate import check_non_negative
from streammachine.redis.entries import as_text
from streammachine.redis.sync import awaitable, run_sync

MAX_SEQ = 2**64 - 1
_ID = re.compile(r"^(\d+)(?:-(\d+))?$")
_AGE = re.compile(r"^(?:-\s*(\d+(?:\.\d+)?)\s*([smhd])|(\d+(?:\.\d+)?)\s*([smhd])\s+ago)$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


class Position(NamedTuple):
    """A parsed position: ``kind`` is "start", "end" or "id"; ``setid`` is what XGROUP SETID gets."""

    kind: str
    setid: str
    first: Optional[str]  # the first id the group will be handed (None: start/end)


def parse_id(text: str) -> tuple:
    match = _ID.match(text.strip())
    if not match:
        raise ValueError(f"{text!r}: expected a stream id such as 1700000000000-0")
    ms, seq = int(match.group(1)), int(match.group(2) or 0)
    if seq > MAX_SEQ:
        raise ValueError(f"{text!r}: the sequence part is larger than {MAX_SEQ}")
    return ms, seq


def id_before(ms: int, seq: int) -> str:
    """The largest id smaller than ``ms-seq`` ("0-0" for the smallest)."""
    if seq > 0:
        return f"{ms}-{seq - 1}"
    if ms > 0:
        return f"{ms - 1}-{MAX_SEQ}"
    return "0-0"


def time_to_ms(value: Union[str, float, int, datetime], now: Optional[float] = None) -> int:
    """Epoch milliseconds of a datetime, an ISO 8601 text (UTC when it names no zone) or an age ("15m ago")."""
    if isinstance(value, datetime):
        stamp = value if value.tzinfo else value.replace(tzinfo=timezone.utc)
        return (stamp - _EPOCH) // timedelta(milliseconds=1)  # exact: float seconds would turn .003 into 2 ms
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return int(value)
    text = str(value).strip()
    age = _AGE.match(text)
    if age:
        amount, unit = (age.group(1), age.group(2)) if age.group(1) else (age.group(3), age.group(4))
        return int(((time.time() if now is None else now) - float(amount) * _UNIT_SECONDS[unit]) * 1000)
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"{value!r}: expected start, end, a stream id (1700000000000-0), an ISO 8601 time "
            "(2024-05-01T10:00:00Z) or an age (15m ago, 2h ago, 1d ago)"
        ) from None
    return time_to_ms(parsed)


def parse_position(to: Union[str, int, float, datetime], now: Optional[float] = None) -> Position:
    """``start``, ``end``, an id or a time -> the id to give XGROUP SETID (see the module doc)."""
    if isinstance(to, str):
        text = to.strip()
        if text in ("start", "beginning", "0", "0-0", "-"):
            return Position("start", "0-0", None)
        if text in ("end", "$", "+"):
            return Position("end", "$", None)
        if _ID.match(text):
            ms, seq = parse_id(text)
            return Position("id", id_before(ms, seq), f"{ms}-{seq}")
    ms = time_to_ms(to, now)
    if ms < 0:
        raise ValueError(f"{to!r}: before the epoch")
    return Position("id", id_before(ms, 0), f"{ms}-0")


def _text_dict(raw: Dict) -> dict:
    return {as_text(k): (as_text(v) if isinstance(v, bytes) else v) for k, v in raw.items()}


def _group_row(g: dict) -> dict:
    return {
        "name": g.get("name"),
        "consumers": g.get("consumers"),
        "pending": g.get("pending"),
        "last_delivered_id": g.get("last-delivered-id"),
        "entries_read": g.get("entries-read"),
        "lag": g.get("lag"),
    }


async def list_groups(client: Any, stream: str) -> List[dict]:
    """Every consumer group of ``stream``: name, consumers, pending, last delivered id, entries read, lag."""
    try:
        reply = await client.xinfo_groups(stream)
    except Exception as exc:
        if "no such key" in str(exc).lower():
            raise KeyError(f"stream {stream!r} does not exist") from None
        raise
    return [_group_row(_text_dict(g)) for g in reply]


async def _find_group(client: Any, stream: str, group: str) -> dict:
    groups = await list_groups(client, stream)
    for row in groups:
        if row["name"] == group:
            return row
    names = ", ".join(repr(g["name"]) for g in groups) or "none"
    raise KeyError(f"stream {stream!r} has no consumer group {group!r} (groups: {names})")


async def reset_group(client: Any, stream: str, group: str, to: Any, *, drop_pending: bool = False) -> dict:
    """Move ``group`` so its next read starts at ``to`` (see the module doc); returns what changed.

    Destructive: entries between the old and new position are skipped or read again.
    KeyError when the stream or the group does not exist, ValueError for a position that does not parse.
    """
    position = parse_position(to)
    before = await _find_group(client, stream, group)
    kwargs = {"entries_read": 0} if position.kind == "start" else {}
    await client.xgroup_setid(stream, group, position.setid, **kwargs)
    dropped = 0
    while drop_pending:
        rows = await client.xpending_range(stream, group, min="-", max="+", count=1000)
        if not rows:
            break
        dropped += await client.xack(stream, group, *[row["message_id"] for row in rows]) or 0
    after = await _find_group(client, stream, group)
    nxt = []
    if position.kind != "end":
        nxt = await client.xrange(stream, min=position.first or "-", count=1)
    return {
        "stream": stream,
        "group": group,
        "to": str(to),
        "was": before["last_delivered_id"],
        "now": after["last_delivered_id"],
        "next_id": as_text(nxt[0][0]) if nxt else None,
        "pending": after["pending"],
        "dropped_pending": dropped,
        "lag": after["lag"],
    }


async def delete_group(client: Any, stream: str, group: str) -> bool:
    """XGROUP DESTROY: the group, its consumers and its pending list go (the stream stays)."""
    await _find_group(client, stream, group)
    return bool(await client.xgroup_destroy(stream, group))


def minid_for_age(max_age: float, now: Optional[float] = None) -> str:
    """The MINID that keeps entries younger than ``max_age`` seconds (XADD/XTRIM ``MINID``)."""
    return f"{max(0, int(((time.time() if now is None else now) - max_age) * 1000))}-0"


async def trim(
    client: Any,
    stream: str,
    *,
    maxlen: Optional[int] = None,
    minid: Optional[str] = None,
    max_age: Optional[float] = None,
    exact: bool = False,
) -> int:
    """XTRIM by length, by minimum id or by age (seconds); approximate (``~``, cheap) unless ``exact``.

    Returns how many entries were removed. Exactly one of ``maxlen``, ``minid``, ``max_age``.
    """
    given = [name for name, value in (("maxlen", maxlen), ("minid", minid), ("max_age", max_age)) if value is not None]
    if len(given) != 1:
        raise ValueError(f"trim {stream!r}: give exactly one of maxlen, minid, max_age (got {given or 'none'})")
    if maxlen is not None:
        maxlen = check_non_negative(f"trim {stream!r}: maxlen", maxlen, integer=True, expected="an integer >= 0")
        return await client.xtrim(stream, maxlen=maxlen, approximate=not exact)
    if max_age is not None:
        check_non_negative(f"trim {stream!r}: max_age", max_age, expected="seconds >= 0")
        minid = minid_for_age(max_age)
    ms, seq = parse_id(str(minid))
    return await client.xtrim(stream, minid=f"{ms}-{seq}", approximate=not exact)


# Synchronous forms (the CLI, the magics): the same coroutines over a sync client (redis/sync.py).


def list_groups_sync(client: Any, stream: str) -> List[dict]:
    return run_sync(list_groups(awaitable(client), stream))


def reset_group_sync(client: Any, stream: str, group: str, to: Any, *, drop_pending: bool = False) -> dict:
    return run_sync(reset_group(awaitable(client), stream, group, to, drop_pending=drop_pending))


def delete_group_sync(client: Any, stream: str, group: str) -> bool:
    return run_sync(delete_group(awaitable(client), stream, group))


def trim_sync(
    client: Any,
    stream: str,
    *,
    maxlen: Optional[int] = None,
    minid: Optional[str] = None,
    max_age: Optional[float] = None,
    exact: bool = False,
) -> int:
    return run_sync(trim(awaitable(client), stream, maxlen=maxlen, minid=minid, max_age=max_age, exact=exact))
