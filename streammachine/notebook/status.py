"""Status rows for the magic and the dashboard: counters from the App, pending/lag from Redis.

The rows are built by one pure function from what was fetched, so the
synchronous magic (sync client) and the dashboard (async client, on the
kernel loop) show the same columns. Rates are measured here, per observer:
``AgentStats.rate()`` resets a shared mark on each call, so two observers
calling it would skew each other.
"""
from __future__ import annotations

import time
from collections import deque
from typing import Dict, Iterable, List, Optional, Tuple

from ..stream_entries import as_text

GroupKey = Tuple[str, str]  # (stream, group)
GroupInfo = Dict[GroupKey, Tuple[Optional[int], Optional[int]]]  # -> (pending, lag)

AGENT_COLUMNS = ["kind", "name", "stream", "group", "state", "processed", "rate", "pending", "lag", "failed",
                 "dead_lettered", "last_error"]


class RateMeter:
    """Messages per second per agent over a sliding window of samples."""

    def __init__(self, window_seconds: float = 3.0) -> None:
        self.window = window_seconds
        self._samples: Dict[str, deque] = {}

    def rate(self, name: str, processed: int, started_at: float, now: Optional[float] = None) -> float:
        now = time.monotonic() if now is None else now
        samples = self._samples.setdefault(name, deque())
        samples.append((now, processed))
        while len(samples) > 2 and now - samples[1][0] >= self.window:
            samples.popleft()
        first_time, first_count = samples[0]
        if first_time == now:  # first look: the average since the agent started
            return processed / max(time.time() - started_at, 1e-9)
        return max(processed - first_count, 0) / (now - first_time)



def groups_from_xinfo(stream: str, reply: Iterable[dict]) -> GroupInfo:
    return {(stream, as_text(g["name"])): (g.get("pending"), g.get("lag")) for g in reply}


def fetch_groups_sync(client, streams: Iterable[str]) -> GroupInfo:
    info: GroupInfo = {}
    for stream in set(streams):
        try:
            info.update(groups_from_xinfo(stream, client.xinfo_groups(stream)))
        except Exception:  # the stream does not exist yet: nothing pending, no lag to show
            pass
    return info


async def fetch_groups(client, streams: Iterable[str]) -> GroupInfo:
    info: GroupInfo = {}
    for stream in set(streams):
        try:
            info.update(groups_from_xinfo(stream, await client.xinfo_groups(stream)))
        except Exception:  # the stream does not exist yet
            pass
    return info


def status_rows(app, groups: GroupInfo, meter: RateMeter) -> List[dict]:
    """One row per agent and per timer of ``app``."""
    rows = []
    state = app.state
    for name, spec in app.agents.items():
        stats = app.stats(name)
        pending, lag = groups.get((spec.stream, spec.group), (None, None))
        rows.append({
            "kind": "agent", "name": name, "stream": spec.stream, "group": spec.group, "state": state,
            "processed": stats.processed, "rate": round(meter.rate(name, stats.processed, stats.started_at), 1),
            "pending": pending, "lag": lag, "failed": stats.failed, "dead_lettered": stats.dead_lettered,
            "last_error": stats.last_error,
        })
    for name, spec in app.timers.items():
        rows.append({
            "kind": "timer", "name": name, "stream": None, "group": None, "state": state,
            "processed": spec.runs, "rate": None, "pending": None, "lag": None, "failed": spec.failures,
            "dead_lettered": None, "last_error": spec.last_error,
        })
    return rows


def status_frame(rows: List[dict]):
    """The rows as a pandas DataFrame (rendered as an HTML table in a notebook)."""
    import pandas as pd

    # object dtype: counts stay ints and absent values stay None (timers have no pending or lag)
    return pd.DataFrame(rows, columns=AGENT_COLUMNS, dtype=object).set_index("name")
