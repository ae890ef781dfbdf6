"""What the dashboard shows, read from Redis: instances, agents, timers, streams, groups, storage.

Plain async functions over a client, JSON-able results. Stream and group
details come from the one inspection core (``redis/inspect.py``); instances
from the registry (``engine/instances.py``). Everything is bounded (streams
listed, entries per page, storage keys) and stored values are truncated, so
a big deployment cannot make one request expensive.
"""

from __future__ import annotations

import time
from typing import Any, Dict, Iterable, List, Optional, Tuple

from streammachine.engine.instances import NAMESPACE, get_instance, list_instances
from streammachine.redis.entries import as_text
from streammachine.redis.inspect import fetch_groups, group_details, stream_info
from streammachine.state.table import KEY_PREFIX as TABLE_PREFIX
from streammachine.state.table import parse_stored

MAX_STREAMS = 200
MAX_ENTRIES = 500
MAX_STORAGE_KEYS = 50
VALUE_CHARS = 200
STORAGE_HASH = "streammachine:storage"  # the "redis" storage backend's hash (state/storage.py)


def text_of(value: Any) -> str:
    return str(as_text(value)) if isinstance(value, (bytes, str)) else repr(value)


def truncate(value: Any, limit: int = VALUE_CHARS) -> str:
    text = text_of(value)
    return text if len(text) <= limit else text[:limit] + f"… ({len(text)} chars)"


def _agents_of(instances: Iterable[dict]) -> List[Tuple[dict, dict]]:
    return [(instance, agent) for instance in instances for agent in instance.get("agents", ())]


async def instances(client: Any) -> List[Dict[str, Any]]:
    """The registry's instances, each with its totals (rate, processed, failed, dead-lettered) and age."""
    now = time.time()
    found = await list_instances(client)
    for instance in found:
        agents = instance.get("agents", ())
        instance["totals"] = {
            key: round(sum(agent.get(key) or 0 for agent in agents), 1)
            for key in ("rate", "processed", "failed", "dead_lettered")
        }
        instance["uptime"] = round(now - instance.get("started", now), 1)
        instance["heartbeat_age"] = round(now - instance.get("heartbeat", now), 2)
    return found


async def instance(client: Any, instance_id: str) -> Optional[Dict[str, Any]]:
    """One instance's last heartbeat, its agents with their group's pending, lag and consumers."""
    record = await get_instance(client, instance_id)
    if record is None:
        return None
    groups = await fetch_groups(client, [agent["stream"] for agent in record.get("agents", ())])
    for agent in record.get("agents", ()):
        agent.update(groups.get((agent["stream"], agent["group"]), {"pending": None, "lag": None, "consumers": None}))
    return record


async def agents(client: Any) -> List[Dict[str, Any]]:
    """Every agent of every instance, with the instance it runs in and its group's pending and lag."""
    found = await list_instances(client)
    pairs = _agents_of(found)
    groups = await fetch_groups(client, [agent["stream"] for _, agent in pairs])
    out = []
    for inst, agent in pairs:
        group = groups.get((agent["stream"], agent["group"]), {})
        out.append(
            {
                **agent,
                "instance": inst["id"],
                "app": inst["name"],
                "pending": group.get("pending"),
                "lag": group.get("lag"),
                "consumers": group.get("consumers"),
            }
        )
    return out


async def timers(client: Any) -> List[Dict[str, Any]]:
    found = await list_instances(client)
    return [
        {**timer, "instance": inst["id"], "app": inst["name"]} for inst in found for timer in inst.get("timers", ())
    ]


async def stream_names(client: Any, limit: int = MAX_STREAMS) -> List[str]:
    """Stream keys on the server (SCAN TYPE stream, at most ``limit``), sorted; the registry's own keys left out."""
    names = set()
    async for key in client.scan_iter(_type="stream", count=1000):
        name = text_of(key)
        if not name.startswith(NAMESPACE):
            names.add(name)
        if len(names) >= limit:
            break
    return sorted(names)


async def streams(client: Any) -> List[Dict[str, Any]]:
    """Each stream's length, first/last id and groups (pending, lag, consumers)."""
    out = []
    for name in await stream_names(client):
        try:
            out.append(await stream_info(client, name))
        except KeyError:  # deleted since the SCAN
            continue
    return out


async def entries(
    client: Any, stream: str, count: int = 50, start: Optional[str] = None, end: Optional[str] = None
) -> Dict[str, Any]:
    """Entries of ``stream``: the last ``count`` (newest first), or those between ``start`` and ``end`` (oldest first)."""
    count = max(1, min(count, MAX_ENTRIES))
    if start is None and end is None:
        raw = await client.xrevrange(stream, "+", "-", count=count)
    else:
        raw = await client.xrange(stream, start or "-", end or "+", count=count)
    return {
        "stream": stream,
        "count": len(raw),
        "entries": [
            {"id": as_text(entry_id), "fields": {as_text(k): truncate(v) for k, v in fields.items()}}
            for entry_id, fields in raw
        ],
    }


async def groups(client: Any, stream: str) -> List[Dict[str, Any]]:
    """The stream's groups, each with its consumers (pending, idle ms, inactive ms)."""
    found = await group_details(client, stream, consumers=True)
    for group in found:
        group["consumers_list"] = group.pop("consumer_details")
    return found


async def storage(client: Any) -> Dict[str, Any]:
    """The ``redis`` storage backend's keys and every stage table (a sample of keys each), values truncated."""
    shared: Dict[str, Any] = {"key": STORAGE_HASH, "size": await client.hlen(STORAGE_HASH), "items": {}}
    async for field, value in client.hscan_iter(STORAGE_HASH, count=MAX_STORAGE_KEYS):
        shared["items"][as_text(field)] = truncate(value)
        if len(shared["items"]) >= MAX_STORAGE_KEYS:
            break
    tables = []
    async for key in client.scan_iter(match=TABLE_PREFIX + "*", _type="hash", count=1000):
        name = text_of(key)
        table = {"name": name[len(TABLE_PREFIX) :], "key": name, "size": await client.hlen(key), "items": {}}
        async for field, raw in client.hscan_iter(key, count=MAX_STORAGE_KEYS):
            _version, body, _expires = parse_stored(raw if isinstance(raw, bytes) else raw.encode())
            if body is not None:
                table["items"][as_text(field)] = truncate(body)
            if len(table["items"]) >= MAX_STORAGE_KEYS:
                break
        tables.append(table)
        if len(tables) >= MAX_STREAMS:
            break
    return {"storage": shared, "tables": sorted(tables, key=lambda t: t["name"])}


async def live(client: Any) -> Dict[str, Any]:
    """One frame of the live charts: per group throughput, pending and lag; pending per consumer; errors."""
    found = await instances(client)
    pairs = _agents_of(found)
    rates: Dict[Tuple[str, str], float] = {}
    for _, agent in pairs:
        key = (agent["stream"], agent["group"])
        rates[key] = rates.get(key, 0.0) + (agent.get("rate") or 0.0)
    group_rows, consumer_rows = [], []
    for stream in sorted({stream for stream, _ in rates}):
        try:
            details = await group_details(client, stream, consumers=True)
        except Exception:  # no such stream yet
            continue
        for group in details:
            key = (stream, group["name"])
            if key not in rates:
                continue
            group_rows.append(
                {"stream": stream, "group": group["name"], "rate": round(rates[key], 1)}
                | {"pending": group.get("pending"), "lag": group.get("lag")}
            )
            for consumer in group["consumer_details"]:
                consumer_rows.append(
                    {"stream": stream, "group": group["name"], "consumer": consumer["name"]}
                    | {"pending": consumer.get("pending"), "idle": consumer.get("idle")}
                )
    errors = [
        {"instance": inst["id"], "agent": agent["name"], "failed": agent.get("failed", 0)}
        | {"dead_lettered": agent.get("dead_lettered", 0), "last_error": agent.get("last_error")}
        for inst, agent in pairs
    ]
    summary = [
        {key: inst.get(key) for key in ("id", "name", "host", "pid", "worker", "state", "heartbeat_age", "uptime")}
        | {"totals": inst["totals"], "agents": len(inst.get("agents", ())), "timers": len(inst.get("timers", ()))}
        for inst in found
    ]
    return {
        "time": time.time(),
        "instances": summary,
        "groups": group_rows,
        "consumers": consumer_rows,
        "errors": errors,
    }
