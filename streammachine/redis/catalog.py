"""The stream catalog: which models each stream's entries follow, with their JSON Schemas, kept in Redis.

Every process that runs a typed agent writes one entry per (stream, model,
role, agent) into the hash ``streammachine:catalog`` when the agent starts
(``role="input"``); a producer can register what it writes with
``register_model`` (``role="output"``). So ``streammachine info STREAM``, the
MCP resource ``streammachine://catalog`` and other processes see the same
catalog, whoever started the agents. Entries are overwritten, never
expire: ``forget`` removes a stream's.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Dict, Iterable, List, Optional

import orjson

from streammachine.redis.connection import async_client
from streammachine.typed.handlers import handler_model
from streammachine.typed.models import codec_for, json_schema

CATALOG_KEY = "streammachine:catalog"

log = logging.getLogger("streammachine.redis.catalog")


def model_path(model: type) -> str:
    return f"{model.__module__}.{model.__qualname__}"


def catalog_entry(stream: str, model: type, *, role: str, agent: Optional[str] = None) -> Dict[str, Any]:
    """One catalog entry: the model, its kind, its fields as they travel, its JSON Schema."""
    if role not in ("input", "output"):
        raise ValueError(f"role={role!r}: expected 'input' (consumed by an agent) or 'output' (written to)")
    codec = codec_for(model)
    return {
        "stream": stream,
        "model": model_path(model),
        "kind": codec.kind,
        "role": role,
        "agent": agent,
        "fields": codec.describe_fields(),
        "schema": json_schema(model),
        "updated": round(time.time(), 3),
    }


def _hash_field(entry: Dict[str, Any]) -> bytes:
    return orjson.dumps([entry["stream"], entry["model"], entry["role"], entry["agent"]])


def _entries(raw: Dict[Any, Any], stream: Optional[str]) -> List[Dict[str, Any]]:
    out = []
    for value in raw.values():
        try:
            entry = orjson.loads(value)
        except orjson.JSONDecodeError:
            continue  # someone else's value under our key: not ours to interpret
        if stream is None or entry.get("stream") == stream:
            out.append(entry)
    return sorted(out, key=lambda e: (e["stream"], e["role"], e["model"], e.get("agent") or ""))


async def publish(client: Any, entries: Iterable[Dict[str, Any]]) -> int:
    """Write catalog entries (one HSET); returns how many."""
    mapping = {_hash_field(e): orjson.dumps(e) for e in entries}
    if mapping:
        await client.hset(CATALOG_KEY, mapping=mapping)
    return len(mapping)


async def publish_agent(client: Any, spec: Any) -> bool:
    """The catalog entry of a typed agent's input model (nothing for an untyped one); True if written.

    Best effort: the catalog describes, it never stops an agent (an ACL that forbids the key is logged).
    """
    found = handler_model(spec.handler)
    if found is None:
        return False
    try:
        await publish(client, [catalog_entry(spec.stream, found.model, role="input", agent=spec.name)])
    except Exception as exc:
        log.warning("agent %s: could not write its model to the catalog %r: %s", spec.name, CATALOG_KEY, exc)
        return False
    return True


async def register_model(target: Any, stream: str, model: type, *, role: str = "output", name: Optional[str] = None):
    """Record that ``stream`` carries ``model`` (an App, a RedisConnection or an async client as ``target``)."""
    client = await async_client(target)
    await publish(client, [catalog_entry(stream, model, role=role, agent=name)])


async def read_catalog(target: Any, stream: Optional[str] = None) -> List[Dict[str, Any]]:
    """Catalog entries (of one stream, or all), sorted by stream, role, model."""
    client = await async_client(target)
    return _entries(await client.hgetall(CATALOG_KEY), stream)


def read_catalog_sync(client: Any, stream: Optional[str] = None) -> List[Dict[str, Any]]:
    """``read_catalog`` on a synchronous client (the CLI, the magics)."""
    return _entries(client.hgetall(CATALOG_KEY), stream)


def forget_sync(client: Any, stream: str) -> int:
    """Remove a stream's catalog entries; returns how many."""
    fields = [f for f, v in client.hgetall(CATALOG_KEY).items() if orjson.loads(v).get("stream") == stream]
    return client.hdel(CATALOG_KEY, *fields) if fields else 0


def catalog_by_stream(entries: Iterable[Dict[str, Any]]) -> Dict[str, List[Dict[str, Any]]]:
    """``{stream: [entries]}``: the shape the MCP resource returns."""
    grouped: Dict[str, List[Dict[str, Any]]] = {}
    for entry in entries:
        grouped.setdefault(entry["stream"], []).append(entry)
    return grouped
