"""Real MCP clients for the tests: the SDK's in-memory session on a built server, and a server process over HTTP."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from contextlib import asynccontextmanager, contextmanager

from mcp import Client

from streammachine.embedded import free_port
from streammachine.mcp import build_server
from tests.helpers import wait_until_sync


@asynccontextmanager
async def connected(redis_url=None, **kwargs):
    server = build_server(redis_url=redis_url, **kwargs)
    try:
        async with Client(server) as client:
            client.transcript = []  # every text the server sent back, to grep for secrets
            client.server = server
            yield client
    finally:
        await server.state.close()


async def call(client, name, arguments=None, *, error=False):
    """Call a tool; its structured result, or (``error=True``) the text of the tool error it must give."""
    result = await client.call_tool(name, arguments or {})
    text = " ".join(getattr(block, "text", "") for block in result.content)
    client.transcript.append(text + json.dumps(result.structured_content, default=str))
    assert result.is_error is error, f"{name}{arguments}: is_error={result.is_error}: {text[:500]}"
    return text if error else result.structured_content


def listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


@contextmanager
def http_server(log_path, *args, env=None):
    """``streammachine mcp --transport streamable-http ARGS`` on a free port until the block ends: yields (port, proc)."""
    port = free_port()
    log = open(log_path, "w")
    proc = subprocess.Popen(
        ["streammachine", "mcp", "--transport", "streamable-http", "--port", str(port), *args],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=dict(os.environ, **(env or {})),
    )
    try:
        wait_until_sync(lambda: proc.poll() is not None or listening(port), 30, what="the MCP HTTP server to listen")
        assert proc.poll() is None, open(log_path).read()
        yield port, proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()
