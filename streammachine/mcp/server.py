"""StreamMachine's MCP server, on the official ``mcp`` SDK (``MCPServer``).

Every tool, resource and prompt the reference names, plus consumer-group,
pending and dead-letter inspection::

    streammachine-mcp                       # stdio
    python -m streammachine                 # stdio (no arguments)
    streammachine mcp --transport streamable-http --port 8000 [--read-only]

- Storage tools use the Redis storage backend (the hash
  ``streammachine:storage``): apps that share state with the MCP server run
  with ``STREAMMACHINE_STORAGE=redis`` on the same Redis.
- OHLC aggregators live in the server process (they are scratch state for
  the model: nothing in Redis changes), one per name.
- ``storage_clear`` and ``obj_delete`` refuse to act without ``confirm:
  true``. Read-only mode (``--read-only`` or ``STREAMMACHINE_MCP_READ_ONLY=1``)
  does not register the tools that write to Redis.
- A failing tool is a tool error (``isError``), its message naming what
  failed; the server keeps serving. Passwords never appear in results,
  errors or resources.
"""

from __future__ import annotations

import functools
import json
import signal
import time
from importlib.metadata import version as _package_version
from typing import Annotated, Any, Callable, Dict, List, Optional

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import Field

from streammachine._redact import redact_url, scrub
from streammachine._speedups import decode_dict_bytes_to_utf8
from streammachine.config import ConsumerConfig, Settings
from streammachine.mcp import guide, objects, ohlc
from streammachine.mcp.models import (
    Cleared,
    ConsumerInfo,
    DeadLetter,
    DeadLetters,
    Entry,
    GroupInfo,
    Health,
    PendingEntry,
    PendingResult,
    Ping,
    ReadResult,
    SendBatchResult,
    SendResult,
    StorageDeleted,
    StorageKeys,
    StorageValue,
    StorageWritten,
    StreamGroups,
    StreamInfo,
    StreamList,
)
from streammachine.redis.catalog import catalog_by_stream, read_catalog
from streammachine.redis.connection import RedisConnection
from streammachine.redis.entries import as_text
from streammachine.redis.inspect import NotAStream, group_details, require_stream
from streammachine.redis.inspect import stream_info as read_stream_info  # the tool below is named stream_info
from streammachine.state.storage import RedisBackend

WRITE_TOOLS = frozenset(
    {
        "stream_send",
        "stream_send_batch",
        "storage_write",
        "storage_delete",
        "storage_clear",
        "obj_delete",
    }
)
DLQ = "_dlq_"

StreamName = Annotated[str, Field(min_length=1, description="Redis stream key")]
Count = Annotated[int, Field(ge=1, le=10000, description="how many entries at most")]


class StreamMachineMCP:
    """The server's state: one Redis connection, the storage hash, OHLC aggregators."""

    def __init__(
        self, settings: Optional[Settings] = None, *, redis_url: Optional[str] = None, read_only: Optional[bool] = None
    ) -> None:
        self.settings = settings or Settings.from_env()
        self.connection = RedisConnection(url=redis_url, settings=self.settings)
        self.storage = RedisBackend(self.connection)
        self.read_only = self.settings.mcp_read_only if read_only is None else bool(read_only)
        self.dead_letter_pattern = ConsumerConfig().dead_letter_stream
        self.aggregators: Dict[str, Any] = {}

    async def client(self):
        return await self.connection.get_client()

    def scrub(self, text: str) -> str:
        """``text`` with every password we know of (and any URL's) replaced by ``***``."""
        return scrub(text, (self.connection.url, self.settings.redis_url))

    async def close(self) -> None:
        await self.connection.close()


def build_server(
    settings: Optional[Settings] = None,
    *,
    redis_url: Optional[str] = None,
    read_only: Optional[bool] = None,
    state: Optional[StreamMachineMCP] = None,
) -> MCPServer:
    """An ``MCPServer`` with StreamMachine's tools, resources and prompts (``server.state`` holds the state)."""
    state = state or StreamMachineMCP(settings, redis_url=redis_url, read_only=read_only)
    level = state.settings.log_level
    server = MCPServer(
        "streammachine",
        version=_package_version("streammachine"),
        log_level=level if level in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL") else "INFO",
        instructions=guide.INSTRUCTIONS + (guide.READ_ONLY_NOTE if state.read_only else ""),
    )
    server.state = state

    def tool(fn: Callable) -> Callable:
        """Register ``fn`` (unless it writes and we are read-only); any failure becomes a scrubbed tool error."""
        if state.read_only and fn.__name__ in WRITE_TOOLS:
            return fn

        @functools.wraps(fn)
        async def guarded(*args: Any, **kwargs: Any) -> Any:
            try:
                return await fn(*args, **kwargs)
            except ToolError as exc:
                raise ToolError(state.scrub(str(exc))) from None
            except Exception as exc:
                raise ToolError(state.scrub(f"{fn.__name__} failed: {type(exc).__name__}: {exc}")) from None

        server.tool()(guarded)
        return fn

    _stream_tools(tool, state)
    _storage_tools(tool, state)
    _health_tools(tool, state)
    objects.register(tool, state)
    ohlc.register(tool, state)
    _resources(server, state)
    _prompts(server)
    return server


# --- streams -------------------------------------------------------------------


def _entries(raw) -> List[Entry]:
    return [Entry(id=as_text(i), fields=decode_dict_bytes_to_utf8(f or {})) for i, f in raw]


async def _require_stream(client, stream: str) -> None:
    try:
        await require_stream(client, stream)
    except NotAStream as exc:
        raise ToolError(str(exc)) from None


def _group_info(group: dict) -> GroupInfo:
    details = group.get("consumer_details")
    return GroupInfo(
        name=group["name"],
        consumers=group["consumers"],
        pending=group["pending"],
        lag=group.get("lag"),
        last_delivered_id=group["last-delivered-id"],
        consumer_details=None
        if details is None
        else [
            ConsumerInfo(name=c["name"], pending=c["pending"], idle_ms=c["idle"], inactive_ms=c.get("inactive"))
            for c in details
        ],
    )


def _stream_tools(tool: Callable, state: StreamMachineMCP) -> None:
    def within_records(count: int) -> None:
        """STREAMMACHINE_RECORDS: the most entries one read tool returns."""
        if count > state.settings.records:
            raise ToolError(f"count={count}: at most STREAMMACHINE_RECORDS={state.settings.records} entries per call")

    @tool
    async def stream_send(
        stream: StreamName,
        message: Annotated[Dict[str, Any], Field(description="fields; nested values are sent as JSON")],
    ) -> SendResult:
        """Send a message to a Redis stream (XADD); returns the new entry's id."""
        new_id = await state.connection.xadd(stream, message, maxlen=state.settings.stream_maxlen)
        return SendResult(stream=stream, id=new_id)

    @tool
    async def stream_send_batch(
        stream: StreamName,
        messages: Annotated[
            List[Dict[str, Any]], Field(min_length=1, max_length=10000, description="records, each a dict of fields")
        ],
    ) -> SendBatchResult:
        """Send multiple messages to a stream in one pipelined batch; all are validated before any is sent."""
        ids = await state.connection.pipeline_xadd(stream, messages, maxlen=state.settings.stream_maxlen)
        return SendBatchResult(stream=stream, count=len(ids), ids=ids)

    @tool
    async def stream_read(
        stream: StreamName,
        count: Count = 10,
        start: Annotated[str, Field(description="first id ('-' = oldest)")] = "-",
        end: Annotated[str, Field(description="last id ('+' = newest)")] = "+",
        latest: Annotated[bool, Field(description="the newest `count` entries instead of the oldest")] = False,
    ) -> ReadResult:
        """Read messages from a stream (XRANGE), oldest first; `latest` gives the newest ones."""
        within_records(count)
        client = await state.client()
        await _require_stream(client, stream)
        if latest:
            raw = list(reversed(await client.xrevrange(stream, max=end, min=start, count=count)))
        else:
            raw = await client.xrange(stream, min=start, max=end, count=count)
        entries = _entries(raw)
        return ReadResult(stream=stream, count=len(entries), entries=entries)

    @tool
    async def stream_info(stream: StreamName) -> StreamInfo:
        """Get stream metadata: length, first/last ids, consumer groups (pending, lag), dead-letter count."""
        dead = state.dead_letter_pattern.format(stream=stream)
        try:
            info = await read_stream_info(await state.client(), stream, dead_letter_stream=dead)
        except NotAStream as exc:
            raise ToolError(str(exc)) from None
        return StreamInfo(
            stream=stream,
            length=info["length"],
            first_id=info["first_id"],
            last_id=info["last_id"],
            groups=[_group_info(group) for group in info["groups"]],
            dead_letter_stream=info["dead_letter"]["stream"],
            dead_letter_length=info["dead_letter"]["length"],
        )

    @tool
    async def stream_list(
        pattern: Annotated[str, Field(description="glob pattern for stream names")] = "*",
        limit: Annotated[int, Field(ge=1, le=100000)] = 1000,
    ) -> StreamList:
        """List all streams matching a pattern (SCAN with TYPE stream; never KEYS)."""
        client = await state.client()
        names: set = set()
        truncated = False
        async for key in client.scan_iter(match=pattern, count=1000, _type="stream"):
            if len(names) >= limit:
                truncated = True
                break
            names.add(as_text(key))
        return StreamList(pattern=pattern, streams=sorted(names), truncated=truncated)

    @tool
    async def stream_groups(stream: StreamName) -> StreamGroups:
        """Consumer groups of a stream with their consumers (pending entries and idle time of each)."""
        client = await state.client()
        await _require_stream(client, stream)
        groups = await group_details(client, stream, consumers=True)
        return StreamGroups(stream=stream, groups=[_group_info(group) for group in groups])

    @tool
    async def stream_pending(
        stream: StreamName,
        group: Annotated[str, Field(min_length=1, description="consumer group")],
        count: Count = 50,
        consumer: Annotated[Optional[str], Field(description="only this consumer's entries")] = None,
    ) -> PendingResult:
        """Entries delivered to a consumer group but not acknowledged (XPENDING): who holds them, for how long."""
        within_records(count)
        client = await state.client()
        await _require_stream(client, stream)
        names = [group["name"] for group in await group_details(client, stream)]
        if group not in names:
            raise ToolError(f"stream {stream!r} has no consumer group {group!r} (groups: {names})")
        summary = await client.xpending(stream, group)
        rows = await client.xpending_range(stream, group, min="-", max="+", count=count, consumername=consumer)
        return PendingResult(
            stream=stream,
            group=group,
            pending=summary["pending"],
            min_id=as_text(summary.get("min")),
            max_id=as_text(summary.get("max")),
            per_consumer={as_text(c["name"]): int(c["pending"]) for c in summary.get("consumers") or []},
            entries=[
                PendingEntry(
                    id=as_text(r["message_id"]),
                    consumer=as_text(r["consumer"]),
                    idle_ms=r["time_since_delivered"],
                    deliveries=r["times_delivered"],
                )
                for r in rows
            ],
        )

    @tool
    async def stream_dead_letters(
        stream: Annotated[str, Field(min_length=1, description="the stream whose failures to show")],
        count: Count = 50,
        dead_letter_stream: Annotated[
            Optional[str], Field(description="override when the agent set ConsumerConfig.dead_letter_stream")
        ] = None,
    ) -> DeadLetters:
        """Read the dead-letter stream ('{stream}:dead'): entries that failed max_deliveries times, with the error."""
        within_records(count)
        client = await state.client()
        dead = dead_letter_stream or state.dead_letter_pattern.format(stream=stream)
        entries = []
        for entry in _entries(await client.xrange(dead, count=count)):
            meta = {k[len(DLQ) :]: v for k, v in entry.fields.items() if k.startswith(DLQ)}
            deliveries, at = meta.get("deliveries"), meta.get("at")
            entries.append(
                DeadLetter(
                    id=entry.id,
                    original_id=meta.get("id"),
                    stream=meta.get("stream"),
                    group=meta.get("group"),
                    agent=meta.get("agent"),
                    error=meta.get("error"),
                    deliveries=int(deliveries) if deliveries and deliveries.isdigit() else None,
                    at=float(at) if at else None,
                    fields={k: v for k, v in entry.fields.items() if not k.startswith(DLQ)},
                )
            )
        return DeadLetters(stream=stream, dead_letter_stream=dead, length=await client.xlen(dead), entries=entries)


# --- storage -------------------------------------------------------------------


def _storage_tools(tool: Callable, state: StreamMachineMCP) -> None:
    storage = state.storage

    @tool
    async def storage_read(
        key: Annotated[str, Field(min_length=1)],
        default: Annotated[Any, Field(description="returned as value when the key is missing")] = None,
    ) -> StorageValue:
        """Read a value from shared storage (the Redis storage backend apps use with STREAMMACHINE_STORAGE=redis)."""
        exists = await storage.exists(key)
        return StorageValue(key=key, exists=exists, value=await storage.read(key, default) if exists else default)

    @tool
    async def storage_write(
        key: Annotated[str, Field(min_length=1)],
        value: Annotated[Any, Field(description="any JSON value")],
    ) -> StorageWritten:
        """Write a JSON value to shared storage under a key."""
        await storage.write(key, value)
        return StorageWritten(key=key)

    @tool
    async def storage_delete(key: Annotated[str, Field(min_length=1)]) -> StorageDeleted:
        """Delete a key from shared storage; `deleted` tells whether it existed."""
        return StorageDeleted(key=key, deleted=await storage.delete(key))

    @tool
    async def storage_keys() -> StorageKeys:
        """List all shared storage keys."""
        keys = await storage.keys()
        return StorageKeys(count=len(keys), keys=keys)

    @tool
    async def storage_clear(
        confirm: Annotated[bool, Field(description="must be true: this deletes every key")] = False,
    ) -> Cleared:
        """Clear all shared storage (requires confirm: true)."""
        if confirm is not True:
            raise ToolError(
                "storage_clear deletes every shared storage key; call it again with confirm: true to go ahead"
            )
        count = len(await storage.keys())
        await storage.clear()
        return Cleared(cleared=count)


# --- health --------------------------------------------------------------------

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


def _health_tools(tool: Callable, state: StreamMachineMCP) -> None:
    @tool
    async def health_check() -> Health:
        """Check Redis connection health (never fails: a down server reads as 'unhealthy')."""
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

    @tool
    async def redis_info(
        section: Annotated[
            Optional[str], Field(description="an INFO section, e.g. 'memory', 'clients'; omitted: a summary")
        ] = None,
    ) -> dict[str, Any]:
        """Get detailed Redis server info (INFO): a summary, or one whole section."""
        client = await state.client()
        if section:
            return {k: v for k, v in (await client.info(section)).items()}
        info = await client.info()
        summary = {k: info[k] for k in _INFO_FIELDS if k in info}
        summary["keyspace"] = {k: v for k, v in info.items() if k.startswith("db") and isinstance(v, dict)}
        return summary

    @tool
    async def redis_ping() -> Ping:
        """Ping the Redis server; returns the round-trip time."""
        client = await state.client()
        started = time.perf_counter()
        pong = await client.ping()
        return Ping(pong=bool(pong), latency_ms=round((time.perf_counter() - started) * 1000, 3))


# --- resources and prompts -------------------------------------------------------


def config_view(state: StreamMachineMCP) -> dict:
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
        "security": {
            "STREAMMACHINE_SECRET_KEY": "set"
            if s.secret_key
            else f"not set: objects are signed with the per-user key file in {s.home}",
            "read_only": state.read_only,
        },
        "version": _package_version("streammachine"),
    }


async def status_view(state: StreamMachineMCP) -> dict:
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
        status["storage"] = {"backend": "redis", "hash": state.storage.key, "keys": len(await state.storage.keys())}
        streams = 0
        async for _ in client.scan_iter(count=1000, _type="stream"):
            streams += 1
        status["streams"] = streams
    except Exception as exc:
        status["redis"] = "disconnected"
        status["error"] = state.scrub(f"{type(exc).__name__}: {exc}")
    return status


def _resources(server: MCPServer, state: StreamMachineMCP) -> None:
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


def _prompts(server: MCPServer) -> None:
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


# --- running -----------------------------------------------------------------------


class _Stopped(Exception):
    """A signal ended the HTTP server."""


def serve(
    settings: Optional[Settings] = None,
    *,
    transport: str = "stdio",
    host: str = "127.0.0.1",
    port: int = 8000,
    redis_url: Optional[str] = None,
    read_only: Optional[bool] = None,
) -> None:
    """Serve until the client goes away (stdio) or SIGINT/SIGTERM (streamable-http)."""
    server = build_server(settings, redis_url=redis_url, read_only=read_only)
    if transport == "stdio":
        server.run("stdio")
    elif transport == "streamable-http":
        # uvicorn shuts down on SIGINT/SIGTERM, then re-raises the signal to the handler it found: make
        # that handler end the run quietly, so a signalled server exits with status 0.
        def stopped(signum, _frame):
            raise _Stopped(signum)

        previous = {sig: signal.signal(sig, stopped) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            server.run("streamable-http", host=host, port=port)
        except _Stopped:
            pass
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    else:
        raise ValueError(f"transport={transport!r}: expected 'stdio' or 'streamable-http'")
