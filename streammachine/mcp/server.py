"""StreamMachine's MCP server, on the official ``mcp`` SDK (``MCPServer``).

Every tool, resource and prompt the reference names, plus consumer groups
(inspect, consume, create, destroy), dead letters (list, show, replay,
purge) and trimming::

    streammachine-mcp                       # stdio
    python -m streammachine                 # stdio (no arguments)
    streammachine mcp --transport streamable-http --port 8000 [--read-only]

- Namespaces: stream tools touch streams only (never the storage hash nor
  the object prefix), storage tools the one hash ``streammachine:storage``,
  object tools string keys under ``STREAMMACHINE_MCP_OBJECT_PREFIX``, OHLC
  tools aggregators in this process (``namespaces.py``).
- Every tool is annotated (read-only, destructive, idempotent hints) and
  checked before it runs: unknown arguments are refused, requests and
  results are bounded, listings are paged (``tooling.py``, ``limits.py``).
- Destructive tools need ``confirm: true`` (the JSON boolean). Read-only
  mode (``--read-only`` or ``STREAMMACHINE_MCP_READ_ONLY=1``) does not
  register the tools that write to Redis.
- A failing tool is a tool error (``isError``) phrased for the caller; the
  server keeps serving. Passwords never appear in results, errors or resources.
- The Redis connection belongs to the server's lifespan: opened on first
  use, closed when the last session (stdio, HTTP, in-memory) ends.
"""

from __future__ import annotations

import logging
import signal
from contextlib import asynccontextmanager, contextmanager
from importlib.metadata import version as _package_version
from typing import Any, AsyncIterator, Dict, Iterator, Optional, cast

from mcp.server.mcpserver import MCPServer

from streammachine._redact import scrub
from streammachine.config import ConsumerConfig, Settings
from streammachine.mcp import deadletters, groups, guide, objects, ohlc, resources, storage, streams
from streammachine.mcp.limits import Limits
from streammachine.mcp.namespaces import Namespaces
from streammachine.mcp.tooling import WRITE_TOOLS, Registrar, StreamMachineServer
from streammachine.redis.connection import RedisConnection
from streammachine.state.storage import RedisBackend

__all__ = ["WRITE_TOOLS", "StreamMachineMCP", "build_server", "serve"]


class StreamMachineMCP:
    """The server's state: one Redis connection, the storage hash, the namespaces and limits, OHLC aggregators."""

    def __init__(
        self, settings: Optional[Settings] = None, *, redis_url: Optional[str] = None, read_only: Optional[bool] = None
    ) -> None:
        self.settings = settings or Settings.from_env()
        self.connection = RedisConnection(url=redis_url, settings=self.settings)
        self.storage = RedisBackend(self.connection)
        self.namespaces = Namespaces(self.storage.key, self.settings.mcp_object_prefix)
        self.limits = Limits(
            self.settings.mcp_max_result_bytes, self.settings.mcp_max_request_bytes, self.settings.records
        )
        self.read_only = self.settings.mcp_read_only if read_only is None else bool(read_only)
        self.dead_letter_pattern = ConsumerConfig().dead_letter_stream
        self.aggregators: Dict[str, Any] = {}
        self.sessions = 0

    async def client(self):
        return await self.connection.get_client()

    def scrub(self, text: str) -> str:
        """``text`` with every password we know of (and any URL's) replaced by ``***``."""
        return scrub(text, (self.connection.url, self.settings.redis_url))

    @asynccontextmanager
    async def session(self) -> AsyncIterator[StreamMachineMCP]:
        """The SDK's lifespan: the connection outlives every session that overlaps it, and no longer."""
        self.sessions += 1
        try:
            yield self
        finally:
            self.sessions -= 1
            if self.sessions == 0:
                await self.close()

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
    with _root_logging_untouched():  # the SDK's constructor calls logging.basicConfig (a rich stderr handler)
        server = StreamMachineServer(
            "streammachine",
            version=_package_version("streammachine"),
            log_level=cast(Any, level if level in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL") else "INFO"),
            instructions=guide.INSTRUCTIONS + (guide.READ_ONLY_NOTE if state.read_only else ""),
            lifespan=lambda _server: state.session(),
        )
    tool = Registrar(server, state)
    server.state, server.registrar = state, tool
    streams.register(tool, state)
    groups.register(tool, state)
    deadletters.register(tool, state)
    storage.register_storage(tool, state)
    storage.register_health(tool, state)
    objects.register(tool, state)
    ohlc.register(tool, state)
    resources.register(server, state)
    return server


@contextmanager
def _root_logging_untouched() -> Iterator[None]:
    """Keep the SDK from configuring the root logger: in a notebook kernel (no root handler yet) its
    basicConfig would print every INFO record of every library in red under the cells. Whoever runs the
    process configures logging (``streammachine-mcp`` does, in cli.py)."""
    root = logging.getLogger()
    if root.handlers:  # basicConfig does nothing then
        yield
        return
    guard = logging.NullHandler()
    root.addHandler(guard)
    try:
        yield
    finally:
        root.removeHandler(guard)


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
    """Serve until the client goes away (stdio) or SIGINT/SIGTERM (streamable-http).

    HTTP binds beyond loopback need a bearer token (STREAMMACHINE_MCP_TOKEN) and, for a wildcard address,
    the Host names clients use (STREAMMACHINE_MCP_ALLOWED_HOSTS); ConfigError says so before anything starts.
    """
    if transport not in ("stdio", "streamable-http"):
        raise ValueError(f"transport={transport!r}: expected 'stdio' or 'streamable-http'")
    settings = settings or Settings.from_env()
    if transport == "stdio":
        build_server(settings, redis_url=redis_url, read_only=read_only).run("stdio")
        return
    from streammachine.mcp import http

    app = http.app(build_server(settings, redis_url=redis_url, read_only=read_only), settings, host)

    # uvicorn shuts down on SIGINT/SIGTERM, then re-raises the signal to the handler it found: make
    # that handler end the run quietly, so a signalled server exits with status 0.
    def stopped(signum, _frame):
        raise _Stopped(signum)

    previous = {sig: signal.signal(sig, stopped) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        http.run(app, host, port, settings.log_level)
    except _Stopped:
        pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
