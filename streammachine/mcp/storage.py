"""The storage tools (the one shared storage hash) and the health tools."""

from __future__ import annotations

import re
import time
from typing import Annotated, Any, Optional

from mcp.server.mcpserver.exceptions import ToolError
from pydantic import Field

from streammachine.mcp.arguments import Confirm, Cursor
from streammachine.mcp.limits import cost, json_bytes, key_page
from streammachine.mcp.models import Cleared, Health, Ping, StorageDeleted, StorageKeys, StorageValue, StorageWritten
from streammachine.mcp.tooling import OVERWRITE, READ

StorageKey = Annotated[str, Field(min_length=1, max_length=1024, description="a key of the shared storage")]

_INFO_FIELDS = (
    "redis_version",
    "valkey_version",
    "server_name",
    "redis_mode",
    "os",
    "uptime_in_seconds",
    "connected_clients",
    "blocked_clients",
    "used_memory",
    "used_memory_human",
    "maxmemory_human",
    "total_commands_processed",
    "instantaneous_ops_per_sec",
    "aof_enabled",
    "role",
)


def register_storage(tool, state) -> None:
    storage, limits = state.storage, state.limits

    @tool(title="Read shared storage", example={"key": "counter", "default": 0}, **READ)
    async def storage_read(
        key: StorageKey,
        default: Annotated[Any, Field(description="returned as value when the key is missing")] = None,
    ) -> StorageValue:
        """Read one value from the shared storage (the Redis hash apps use with STREAMMACHINE_STORAGE=redis).

        A value too big for one result comes back as null with `truncated: true` and its size.
        """
        exists = await storage.exists(key)
        value = await storage.read(key, default) if exists else default
        if cost(value) > limits.page_budget:
            size = len(json_bytes(value))
            return StorageValue(key=key, exists=exists, value=None, truncated=True, size_bytes=size)
        return StorageValue(key=key, exists=exists, value=value)

    @tool(
        title="Write shared storage",
        example={"key": "config", "value": {"symbols": ["AAPL"], "live": True}},
        **OVERWRITE,
    )
    async def storage_write(
        key: StorageKey,
        value: Annotated[Any, Field(description="any JSON value; replaces the key's value")],
    ) -> StorageWritten:
        """Write a JSON value to the shared storage under a key (replaces what was there)."""
        await storage.write(key, value)
        return StorageWritten(key=key)

    @tool(title="Delete a storage key", example={"key": "config"}, **OVERWRITE)
    async def storage_delete(key: StorageKey) -> StorageDeleted:
        """Delete one key from the shared storage; `deleted` tells whether it existed."""
        return StorageDeleted(key=key, deleted=await storage.delete(key))

    @tool(title="List storage keys", example={"limit": 100}, **READ)
    async def storage_keys(
        limit: Annotated[int, Field(ge=1, le=100000, description="keys per page (1..100000)")] = 1000,
        cursor: Cursor = None,
    ) -> StorageKeys:
        """List the shared storage's keys, sorted; paged: `next_cursor` continues."""
        page, next_cursor = key_page(await storage.keys(), cursor, limit, limits.page_budget)
        return StorageKeys(
            count=len(page), keys=page, next_cursor=next_cursor, truncated=bool(next_cursor) and len(page) < limit
        )

    @tool(title="Clear shared storage", example={"confirm": True}, **OVERWRITE)
    async def storage_clear(confirm: Confirm = False) -> Cleared:
        """Delete every key of the shared storage. Needs confirm: true (the JSON boolean)."""
        if confirm is not True:
            count = len(await storage.keys())
            raise ToolError(
                f"storage_clear would delete all {count} shared storage key(s); call it again with confirm: true"
            )
        count = len(await storage.keys())
        await storage.clear()
        return Cleared(cleared=count)


def register_health(tool, state) -> None:
    @tool(title="Health check", example={}, **READ)
    async def health_check() -> Health:
        """Check the Redis connection (never fails: a down server reads as 'unhealthy'); latency in ms."""
        try:
            client = await state.client()
            started = time.perf_counter()
            await client.ping()
            latency = round((time.perf_counter() - started) * 1000, 3)
            return Health(
                status="healthy",
                redis="connected",
                server=state.connection.safe_url,
                latency_ms=latency,
                read_only=state.read_only,
            )
        except Exception as exc:
            return Health(
                status="unhealthy",
                redis="disconnected",
                server=state.connection.safe_url,
                latency_ms=None,
                read_only=state.read_only,
                error=state.scrub(f"{type(exc).__name__}: {exc}"),
            )

    @tool(title="Redis server info", example={"section": "memory"}, **READ)
    async def redis_info(
        section: Annotated[
            Optional[str], Field(description="an INFO section, e.g. 'memory', 'clients', 'stats'; omitted: a summary")
        ] = None,
    ) -> dict[str, Any]:
        """Redis server info (INFO): a summary (version, memory, clients, keyspace), or one whole section."""
        client = await state.client()
        if section:
            if not re.fullmatch(r"[A-Za-z_]{1,40}", section):
                raise ToolError(f"section={section!r}: expected an INFO section name such as 'memory' or 'clients'")
            return {k: v for k, v in (await client.info(section)).items()}
        info = await client.info()
        summary = {k: info[k] for k in _INFO_FIELDS if k in info}
        summary["keyspace"] = {k: v for k, v in info.items() if k.startswith("db") and isinstance(v, dict)}
        return summary

    @tool(title="Ping Redis", example={}, **READ)
    async def redis_ping() -> Ping:
        """Ping the Redis server; the round trip in ms."""
        client = await state.client()
        started = time.perf_counter()
        pong = await client.ping()
        return Ping(pong=bool(pong), latency_ms=round((time.perf_counter() - started) * 1000, 3))
