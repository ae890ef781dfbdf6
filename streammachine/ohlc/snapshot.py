"""The snapshot format both OHLC cores share: their whole state as plain JSON-able data.

A snapshot from one core restores into the other (the parity tests hold
them to it)::

    {"format": 1, "intervals": [60000, 300000],
     "tick_count": 1234, "late_ticks": 0, "rejected": 2,
     "symbols": [                                # first-seen order
        {"name": "AAPL", "latest_ts": 1700000059000,          # null: no tick yet
         "series": [                             # one per interval, in "intervals" order
            {"watermark": 1700000040000,         # ticks before it are late; null: never flushed
             "candles": [[start, open, high, low, close, volume, trade_count, first_ts, last_ts], ...]},
            ...]},
        ...]}

Candles are sorted by start; in the dict ``snapshot()`` returns each is a
tuple (an array in JSON; ``restore`` takes either). Numbers are JSON numbers; a volume sum that
overflowed to infinity is written as the string "inf" (JSON has no
infinity). ``parse`` checks a snapshot before a core takes it, so a bad
one is refused whole with a ValueError naming what is wrong.
"""

from __future__ import annotations

import json
import math
from typing import Any, List, Optional, Tuple

from streammachine.redis.entries import _short

FORMAT = 1

Row = Tuple[int, float, float, float, float, float, int, int, int]


def build(core: Any) -> dict:
    """The snapshot of ``core`` (a FastOHLC): see the module docstring."""
    symbols = [
        {
            "name": name,
            "latest_ts": latest,
            "series": [{"watermark": watermark, "candles": _json_rows(rows)} for watermark, rows in series],
        }
        for name, latest, series in core._export()
    ]
    return {
        "format": FORMAT,
        "intervals": list(core.intervals),
        "tick_count": core.tick_count,
        "late_ticks": core.late_ticks,
        "rejected": core.rejected,
        "symbols": symbols,
    }


def _json_rows(rows: List[Row]) -> list:
    """The rows as they are (JSON writers take tuples as arrays); an overflowed volume sum spelled "inf"."""
    if _INF in [row[5] for row in rows]:  # JSON has no infinity (orjson would write null)
        return [(*row[:5], repr(row[5]) if row[5] == _INF else row[5], *row[6:]) for row in rows]
    return rows


_INF = float("inf")


def parse(snapshot: Any, intervals: tuple) -> Tuple[list, int, int, int]:
    """Check a snapshot (dict, or its JSON as str/bytes) for a core with ``intervals``.

    Returns ``(symbols, tick_count, late_ticks, rejected)`` where symbols is
    ``[(name, latest_ts or None, [(watermark or None, [row, ...]) per interval]), ...]``.
    """
    if isinstance(snapshot, (str, bytes, bytearray, memoryview)):
        snapshot = parse_json(snapshot)
    if not isinstance(snapshot, dict):
        raise ValueError(f"OHLC snapshot: expected a dict, got {type(snapshot).__name__}")
    if snapshot.get("format") != FORMAT:
        raise ValueError(f"OHLC snapshot: format {snapshot.get('format')!r}, expected {FORMAT}")
    if list(snapshot.get("intervals") or ()) != list(intervals):
        raise ValueError(
            f"OHLC snapshot: intervals {snapshot.get('intervals')!r} differ from this aggregator's {list(intervals)}"
        )
    tick_count, late_ticks, rejected = (
        _count(snapshot.get(key), key) for key in ("tick_count", "late_ticks", "rejected")
    )
    raw_symbols = snapshot.get("symbols")
    if not isinstance(raw_symbols, list):
        raise ValueError("OHLC snapshot: 'symbols' must be a list")
    symbols, seen = [], set()
    for item in raw_symbols:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str) or not item["name"]:
            raise ValueError(f"OHLC snapshot: bad symbol entry {_short(item)}")
        name = item["name"]
        if name in seen:
            raise ValueError(f"OHLC snapshot: symbol {name!r} twice")
        seen.add(name)
        latest = _stamp_or_none(item.get("latest_ts"), f"{name}: latest_ts")
        series = item.get("series")
        if not isinstance(series, list) or len(series) != len(intervals):
            raise ValueError(f"OHLC snapshot: {name}: expected {len(intervals)} series, one per interval")
        symbols.append((name, latest, [_series(s, interval, name) for s, interval in zip(series, intervals)]))
    return symbols, tick_count, late_ticks, rejected


def parse_json(text: Any) -> Any:
    try:
        return json.loads(text if isinstance(text, str) else bytes(text))
    except ValueError as exc:
        raise ValueError(f"OHLC snapshot: not valid JSON ({exc})") from None


def _series(series: Any, interval: int, name: str) -> Tuple[Optional[int], List[Row]]:
    where = f"{name}/{interval}ms"
    if not isinstance(series, dict) or not isinstance(series.get("candles"), list):
        raise ValueError(f"OHLC snapshot: {where}: expected {{'watermark': ..., 'candles': [...]}}")
    watermark = _stamp_or_none(series.get("watermark"), f"{where}: watermark")
    rows: List[Row] = []
    previous = None
    for raw in series["candles"]:
        if not isinstance(raw, (list, tuple)) or len(raw) != 9:
            raise ValueError(f"OHLC snapshot: {where}: bad candle {_short(raw)}")
        start, first_ts, last_ts = (_count(raw[i], f"{where}: candle time") for i in (0, 7, 8))
        count = _count(raw[6], f"{where}: trade_count")
        open_price, high, low, close = (_number(raw[i], f"{where}: price") for i in range(1, 5))
        volume = _number(raw[5], f"{where}: volume", finite=False)
        if (
            start % interval
            or (previous is not None and start <= previous)
            or count < 1
            or not start <= first_ts <= last_ts < start + interval
            or (watermark is not None and start < watermark)
            or not all(math.isfinite(p) for p in (open_price, high, low, close))
        ):
            raise ValueError(f"OHLC snapshot: {where}: inconsistent candle {_short(raw)}")
        previous = start
        rows.append((start, open_price, high, low, close, volume, count, first_ts, last_ts))
    return watermark, rows


def _count(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**63:
        raise ValueError(f"OHLC snapshot: {what}={_short(value)}: expected an integer >= 0")
    return value


def _stamp_or_none(value: Any, what: str) -> Optional[int]:
    return None if value is None else _count(value, what)


def _number(value: Any, what: str, finite: bool = True) -> float:
    if isinstance(value, str) and not finite and value == "inf":
        return float(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"OHLC snapshot: {what}={_short(value)}: expected a number")
    return float(value) + 0.0
