"""Status rows for the magic and the dashboard: counters from the App, pending/lag from Redis.

The rows are built by one pure function from what was fetched, so the
synchronous magic (sync client) and the dashboard (async client, on the
kernel loop) show the same columns. Rates come from ``AgentStats.rate()``,
which observers share without skewing each other.
"""

from __future__ import annotations

from typing import List

from streammachine.redis.inspect import Groups

AGENT_COLUMNS = [
    "kind",
    "name",
    "stream",
    "group",
    "state",
    "processed",
    "rate",
    "pending",
    "lag",
    "failed",
    "dead_lettered",
    "last_error",
]


def status_rows(app, groups: Groups) -> List[dict]:
    """One row per agent and per timer of ``app``."""
    rows = []
    state = app.state
    for name, spec in app.agents.items():
        stats = app.stats(name)
        group = groups.get((spec.stream, spec.group), {})
        rows.append(
            {
                "kind": "agent",
                "name": name,
                "stream": spec.stream,
                "group": spec.group,
                "state": state,
                "processed": stats.processed,
                "rate": round(stats.rate(), 1),
                "pending": group.get("pending"),
                "lag": group.get("lag"),
                "failed": stats.failed,
                "dead_lettered": stats.dead_lettered,
                "last_error": stats.last_error,
            }
        )
    for name, spec in app.timers.items():
        rows.append(
            {
                "kind": "timer",
                "name": name,
                "stream": None,
                "group": None,
                "state": state,
                "processed": spec.runs,
                "rate": None,
                "pending": None,
                "lag": None,
                "failed": spec.failures,
                "dead_lettered": None,
                "last_error": spec.last_error,
            }
        )
    return rows


def status_frame(rows: List[dict]):
    """The rows as a pandas DataFrame (rendered as an HTML table in a notebook)."""
    import pandas as pd

    # object dtype: counts stay ints and absent values stay None (timers have no pending or lag)
    index = ["app", "name"] if rows and "app" in rows[0] else ["name"]
    columns = [c for c in index if c != "name"] + AGENT_COLUMNS
    return pd.DataFrame(rows, columns=columns, dtype=object).set_index(index)
