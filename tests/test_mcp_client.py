"""The reference's MCP test client: ``python tests/test_mcp_client.py`` validates every documented handler.

It starts ``streammachine-mcp`` as a real stdio server (against ``REDIS_URL``, or an embedded server when
none is set), calls each of the reference's 24 tools with valid arguments, reads both resources, gets both
prompts, prints one line per handler and exits 1 if any failed. The test below runs it as a script.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Tuple

if __name__ == "__main__":  # run as a script, tests/ is sys.path[0]: its mcp/ and redis/ folders would shadow the SDKs
    sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != Path(__file__).resolve().parent]

from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client

T0 = 1_638_360_000_000
STREAM = "mcp-client:events"
OHLC = "mcp-client-market"

# The reference's tools, in its order, each with arguments a user would pass.
REFERENCE_CALLS: List[Tuple[str, Dict[str, Any]]] = [
    ("stream_send", {"stream": STREAM, "message": {"type": "user_action", "user_id": "123"}}),
    ("stream_send_batch", {"stream": STREAM, "messages": [{"n": 1}, {"n": 2}]}),
    ("stream_read", {"stream": STREAM, "count": 10}),
    ("stream_info", {"stream": STREAM}),
    ("stream_list", {"pattern": "mcp-client:*"}),
    ("storage_write", {"key": "mcp-client:counter", "value": 42}),
    ("storage_read", {"key": "mcp-client:counter"}),
    ("storage_keys", {}),
    ("storage_delete", {"key": "mcp-client:counter"}),
    ("storage_clear", {"confirm": True}),
    ("health_check", {}),
    ("redis_info", {"section": "server"}),
    ("redis_ping", {}),
    ("obj_list", {"pattern": "mcp-client:*"}),
    ("obj_get", {"key": "mcp-client:model"}),
    ("obj_delete", {"pattern": "mcp-client:*", "confirm": True}),
    ("ohlc_create", {"name": OHLC, "intervals": [60000, 300000]}),
    ("ohlc_update", {"name": OHLC, "symbol": "AAPL", "price": 150.25, "volume": 1000, "timestamp_ms": T0}),
    ("ohlc_update", {"name": OHLC, "symbol": "AAPL", "price": 151.0, "volume": 10, "timestamp_ms": T0 + 61_000}),
    ("ohlc_get_candles", {"name": OHLC, "symbol": "AAPL", "interval_ms": 60000}),
    ("ohlc_get_completed", {"name": OHLC, "symbol": "AAPL", "interval_ms": 60000}),
    ("ohlc_flush", {"name": OHLC, "symbol": "AAPL", "interval_ms": 60000}),
    ("ohlc_stats", {"name": OHLC}),
    ("ohlc_list", {}),
    ("ohlc_clear", {"name": OHLC}),
]
REFERENCE_TOOLS = sorted({name for name, _ in REFERENCE_CALLS})
RESOURCES = ["streammachine://config", "streammachine://status"]
PROMPTS = ["streammachine-guide", "stream-processing-patterns"]


def _check(name: str, result: Dict[str, Any]) -> str:
    """What a correct answer to the call above contains; '' when it does, else why not."""
    expected = {
        "stream_send": lambda r: "-" in r.get("id", ""),
        "stream_send_batch": lambda r: len(r.get("ids", [])) == 2,
        "stream_read": lambda r: len(r.get("entries", [])) == 3,
        "stream_info": lambda r: r.get("length") == 3,
        "storage_read": lambda r: r.get("value") == 42,
        "health_check": lambda r: r.get("status") == "healthy",
        "obj_get": lambda r: r.get("value") == {"complex": ["object", 123]},
        "ohlc_get_completed": lambda r: len(r.get("candles", [])) == 1,
        "ohlc_stats": lambda r: r.get("tick_count") == 2,
    }.get(name)
    return "" if expected is None or expected(result) else f"unexpected result {result!r}"[:300]


async def _prepare(redis_url: str) -> None:
    """A fresh stream (so a second run counts the same) and one stored object for obj_get."""
    import redis.asyncio

    from streammachine import RedisObjectStorage

    client = redis.asyncio.from_url(redis_url)
    try:
        await client.delete(STREAM)
    finally:
        await client.aclose()
    storage = RedisObjectStorage(url=redis_url)
    try:
        await storage.store_with_pickle("mcp-client:model", {"complex": ["object", 123]})
    finally:
        await storage.close()


async def validate(redis_url: str, env: Dict[str, str]) -> List[str]:
    """Run every reference handler through a stdio server; returns the failures (empty: all passed)."""
    await _prepare(redis_url)
    executable = shutil.which("streammachine-mcp")
    command, args = (executable, []) if executable else (sys.executable, ["-m", "streammachine.mcp_server"])
    params = StdioServerParameters(command=command, args=args, env={**env, "REDIS_URL": redis_url})
    failures: List[str] = []
    async with Client(stdio_client(params)) as client:
        listed = {tool.name for tool in (await client.list_tools()).tools}
        failures += [f"{name}: not listed" for name in REFERENCE_TOOLS if name not in listed]
        for name, arguments in REFERENCE_CALLS:
            result = await client.call_tool(name, arguments)
            text = " ".join(getattr(block, "text", "") for block in result.content)
            problem = f"tool error: {text[:300]}" if result.is_error else _check(name, result.structured_content or {})
            print(f"{'FAIL' if problem else 'ok  '} {name} {problem}", flush=True)
            failures += [f"{name}: {problem}"] if problem else []
        for uri in RESOURCES:
            contents = (await client.read_resource(uri)).contents
            ok = bool(contents) and bool(getattr(contents[0], "text", ""))
            print(f"{'ok  ' if ok else 'FAIL'} resource {uri}", flush=True)
            failures += [] if ok else [f"resource {uri}: empty"]
        for prompt in PROMPTS:
            messages = (await client.get_prompt(prompt)).messages
            print(f"{'ok  ' if messages else 'FAIL'} prompt {prompt}", flush=True)
            failures += [] if messages else [f"prompt {prompt}: no messages"]
    return failures


def main() -> int:
    from streammachine.embedded import EmbeddedServer

    env = dict(os.environ)
    with tempfile.TemporaryDirectory(prefix="streammachine-mcp-client-") as scratch:
        env.setdefault("STREAMMACHINE_HOME", str(Path(scratch) / "home"))
        os.environ["STREAMMACHINE_HOME"] = env["STREAMMACHINE_HOME"]  # this process signs what the server reads
        if env.get("REDIS_URL"):
            failures = asyncio.run(validate(env["REDIS_URL"], env))
        else:
            with EmbeddedServer(Path(scratch) / "valkey") as server:
                failures = asyncio.run(validate(server.url, env))
    print(f"{len(REFERENCE_TOOLS) - len({f.split(':')[0] for f in failures})}/{len(REFERENCE_TOOLS)} tools passed")
    return 1 if failures else 0


def test_reference_client_validates_every_handler(redis_url, tmp_path):
    """The documented command, run as a user would: every handler answers correctly over stdio."""
    env = dict(os.environ, REDIS_URL=redis_url, STREAMMACHINE_HOME=str(tmp_path / "home"))
    done = subprocess.run(
        [sys.executable, str(Path(__file__))], env=env, capture_output=True, text=True, timeout=240, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    passed = {line.split()[1] for line in done.stdout.splitlines() if line.startswith("ok ")}
    assert set(REFERENCE_TOOLS) <= passed, done.stdout
    assert f"{len(REFERENCE_TOOLS)}/{len(REFERENCE_TOOLS)} tools passed" in done.stdout


def test_inspector_loader_finds_the_server():
    """``mcp dev streammachine/mcp_fast.py``: the SDK's own loader finds an MCPServer in the file."""
    from mcp.cli.cli import _import_server
    from mcp.server.mcpserver import MCPServer

    import streammachine

    server = _import_server(Path(streammachine.__file__).with_name("mcp_fast.py"))
    assert isinstance(server, MCPServer)
    assert server.name == "streammachine"


if __name__ == "__main__":
    sys.exit(main())
