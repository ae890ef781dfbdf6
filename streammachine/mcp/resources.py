"""The two resources (configuration, status) and the two prompts the reference names."""

from __future__ import annotations

import json
import time
from importlib.metadata import version as _package_version
from typing import Annotated, Any

from mcp.server.mcpserver import MCPServer
from pydantic import Field

from streammachine._redact import redact_url
from streammachine.mcp import guide
from streammachine.redis.catalog import catalog_by_stream, read_catalog


def config_view(state: Any) -> dict:
    s = state.settings
    url = state.connection.url or s.redis_url
    return {
        "redis": {
            "url": redact_url(url) if url else None,
            "resolved": state.connection.url is not None,
            "REDIS_HOST": s.redis_host,
            "REDIS_PORT": s.redis_port,
            "REDIS_DB": s.redis_db,
            "cluster": s.redis_cluster,
            "REDIS_MAX_CONNECTIONS": s.max_connections,
            "embedded_fallback": s.embedded,
            "home": str(s.home),
        },
        "consumers": {
            "STREAMMACHINE_RECORDS": s.records,
            "STREAMMACHINE_COUNT": s.count,
            "STREAMMACHINE_DEFAULT_GROUP": s.default_group,
            "STREAMMACHINE_BLOCK_MS": s.block_ms,
            "STREAMMACHINE_MAX_DELIVERIES": s.max_deliveries,
            "STREAMMACHINE_CLAIM_IDLE_MS": s.claim_idle_ms,
            "STREAMMACHINE_RETRY_DELAY_MS": s.retry_delay_ms,
            "STREAMMACHINE_STREAM_MAXLEN": s.stream_maxlen,
            "STREAMMACHINE_GRACE_SECONDS": s.grace_seconds,
            "dead_letter_stream": state.dead_letter_pattern,
        },
        "storage": {
            "backend": "redis",
            "hash": state.storage.key,
            "note": "apps share this state when they run with STREAMMACHINE_STORAGE=redis",
        },
        "mcp": {
            "STREAMMACHINE_MCP_OBJECT_PREFIX": state.namespaces.object_prefix,
            "STREAMMACHINE_MCP_MAX_RESULT_BYTES": state.limits.max_result_bytes,
            "STREAMMACHINE_MCP_MAX_REQUEST_BYTES": state.limits.max_request_bytes,
            "STREAMMACHINE_MCP_ALLOWED_HOSTS": list(s.mcp_allowed_hosts),
            "STREAMMACHINE_MCP_ALLOWED_ORIGINS": list(s.mcp_allowed_origins),
        },
        "security": {
            "STREAMMACHINE_SECRET_KEY": "set"
            if s.secret_key
            else f"not set: objects are signed with the per-user key file in {s.home}",
            "STREAMMACHINE_MCP_TOKEN": "set: HTTP clients must send it as a bearer token" if s.mcp_token else "not set",
            "read_only": state.read_only,
        },
        "version": _package_version("streammachine"),
    }


async def status_view(state: Any) -> dict:
    status: dict = {
        "server": state.connection.safe_url,
        "read_only": state.read_only,
        "ohlc_aggregators": sorted(state.aggregators),
    }
    try:
        client = await state.client()
        started = time.perf_counter()
        await client.ping()
        status["redis"] = "connected"
        status["latency_ms"] = round((time.perf_counter() - started) * 1000, 3)
        info = await client.info("server")
        status["server_version"] = info.get("valkey_version") or info.get("redis_version")
        status["storage"] = {
            "backend": "redis",
            "hash": state.storage.key,
            "keys": await client.hlen(state.storage.key),
        }
        streams = 0
        async for _ in client.scan_iter(count=1000, _type="stream"):
            streams += 1
        status["streams"] = streams
    except Exception as exc:
        status["redis"] = "disconnected"
        status["error"] = state.scrub(f"{type(exc).__name__}: {exc}")
    return status


def register(server: MCPServer, state: Any) -> None:
    @server.resource(
        "streammachine://config",
        name="config",
        mime_type="application/json",
        description="Current configuration (from the environment), credentials redacted",
    )
    def config() -> str:
        return json.dumps(config_view(state), indent=2, default=str)

    @server.resource(
        "streammachine://status",
        name="status",
        mime_type="application/json",
        description="Redis connection and storage status",
    )
    async def status() -> str:
        return json.dumps(await status_view(state), indent=2, default=str)

    @server.resource(
        "streammachine://catalog",
        name="catalog",
        mime_type="application/json",
        description="Stream catalog: per stream, the models its agents read and producers write, with JSON Schemas",
    )
    async def catalog() -> str:
        entries = await read_catalog(await state.client())
        return json.dumps({"streams": catalog_by_stream(entries)}, indent=2, default=str)

    @server.prompt(name="streammachine-guide")
    def streammachine_guide(
        topic: Annotated[str, Field(description="overview, agents, timers, storage, mcp or ohlc")] = "overview",
    ) -> str:
        """Interactive guide for using StreamMachine."""
        return guide.guide(topic)

    @server.prompt(name="stream-processing-patterns")
    def stream_processing_patterns(
        pattern: Annotated[
            str, Field(description="all, producer-consumer, pipeline, fan-out, time-series, stateful or ohlc")
        ] = "all",
    ) -> str:
        """Common stream-processing patterns and their StreamMachine implementations."""
        return guide.patterns(pattern)
