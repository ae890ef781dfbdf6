"""Consumer-group backlog from XINFO GROUPS: pending, lag and consumers per (stream, group).

One reader for everything that shows a group's state: ``App.status()``, the
notebook's status table and dashboard, the Prometheus metrics.
"""

from __future__ import annotations

from typing import Dict, Iterable, Tuple

from streammachine.redis.entries import as_text

GroupKey = Tuple[str, str]  # (stream, group)
Groups = Dict[GroupKey, dict]  # -> {"pending": int, "lag": int | None, "consumers": int}


def groups_from_xinfo(stream: str, reply: Iterable[dict]) -> Groups:
    return {
        (stream, as_text(g["name"])): {
            "pending": g.get("pending"),
            "lag": g.get("lag"),
            "consumers": g.get("consumers"),
        }
        for g in reply
    }


async def fetch_groups(client, streams: Iterable[str]) -> Groups:
    """Every group of every stream (streams in sorted order); a stream that does not exist yet has none."""
    groups: Groups = {}
    for stream in sorted(set(streams)):
        try:
            groups.update(groups_from_xinfo(stream, await client.xinfo_groups(stream)))
        except Exception:  # no such stream yet: nothing pending, no lag to show
            pass
    return groups


def fetch_groups_sync(client, streams: Iterable[str]) -> Groups:
    """``fetch_groups`` on a synchronous client (the notebook magics)."""
    groups: Groups = {}
    for stream in sorted(set(streams)):
        try:
            groups.update(groups_from_xinfo(stream, client.xinfo_groups(stream)))
        except Exception:
            pass
    return groups
