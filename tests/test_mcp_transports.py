"""The MCP server as a real process: `streammachine-mcp` over stdio, `streammachine mcp` over streamable HTTP."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys

import pytest
from helpers import wait_until_sync
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client

from streammachine.embedded import free_port

T0 = 1_638_360_000_000


async def _exercise(client, sync_redis):
    tools = {tool.name for tool in (await client.list_tools()).tools}
    assert {"stream_send", "stream_read", "ohlc_create", "ohlc_update", "ohlc_get_candles", "obj_get"} <= tools

    sent = await client.call_tool("stream_send", {"stream": "events", "message": {"kind": "click", "n": 7}})
    assert not sent.is_error, sent.content
    new_id = sent.structured_content["id"]
    assert sync_redis.xrange("events") == [(new_id, {"kind": "click", "n": "7"})]
    read = await client.call_tool("stream_read", {"stream": "events", "latest": True, "count": 1})
    assert read.structured_content["entries"] == [{"id": new_id, "fields": {"kind": "click", "n": "7"}}]

    created = await client.call_tool("ohlc_create", {"name": "market", "intervals": [60000]})
    assert created.structured_content["intervals"] == [60000]
    for offset, price in ((0, 10.0), (1000, 12.0), (2000, 9.5)):
        update = await client.call_tool(
            "ohlc_update",
            {"name": "market", "symbol": "AAPL", "price": price, "volume": 1.0, "timestamp_ms": T0 + offset},
        )
        assert not update.is_error, update.content
    candles = await client.call_tool("ohlc_get_candles", {"name": "market", "symbol": "AAPL", "interval_ms": 60000})
    (candle,) = candles.structured_content["candles"]
    assert (candle["open"], candle["high"], candle["low"], candle["close"], candle["trade_count"]) == (
        10.0,
        12.0,
        9.5,
        9.5,
        3,
    )

    failed = await client.call_tool("stream_info", {"stream": "missing"})
    assert failed.is_error and "does not exist" in failed.content[0].text
    health = await client.call_tool("health_check", {})
    assert health.structured_content["status"] == "healthy", "the server keeps serving after a tool error"


@pytest.mark.parametrize(
    "command",
    [["streammachine-mcp"], [sys.executable, "-m", "streammachine"]],
    ids=["streammachine-mcp", "python-m-streammachine"],
)
async def test_stdio_server(redis_url, sync_redis, tmp_path, command):
    executable = shutil.which(command[0])
    assert executable, f"{command[0]} is installed"
    params = StdioServerParameters(
        command=executable, args=command[1:], env={"REDIS_URL": redis_url, "STREAMMACHINE_HOME": str(tmp_path / "home")}
    )
    with open(tmp_path / "stderr.log", "w") as errlog:
        async with Client(stdio_client(params, errlog=errlog)) as client:
            await _exercise(client, sync_redis)
    assert (tmp_path / "stderr.log").read_text().count("Traceback") == 0


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


async def test_streamable_http_server(redis_url, sync_redis, tmp_path):
    port = free_port()
    log = open(tmp_path / "server.log", "w")
    proc = subprocess.Popen(
        ["streammachine", "--redis-url", redis_url, "mcp", "--transport", "streamable-http", "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=dict(os.environ),
    )
    try:
        wait_until_sync(lambda: proc.poll() is None and _listening(port), 30, what="the MCP HTTP server to listen")
        async with Client(f"http://127.0.0.1:{port}/mcp") as client:
            await _exercise(client, sync_redis)
        async with Client(f"http://127.0.0.1:{port}/mcp") as second:  # a new session sees the same aggregators
            stats = await second.call_tool("ohlc_stats", {"name": "market"})
            assert stats.structured_content["tick_count"] == 3
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
    output = (tmp_path / "server.log").read_text()
    assert redis_url.split(":")[2].split("@")[0] not in output, "the password never reaches the log"


async def test_read_only_flag_over_http(redis_url, tmp_path):
    port = free_port()
    proc = subprocess.Popen(
        ["streammachine", "mcp", "--transport", "streamable-http", "--port", str(port), "--read-only"],
        env=dict(os.environ, REDIS_URL=redis_url),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until_sync(lambda: proc.poll() is None and _listening(port), 30, what="the MCP HTTP server to listen")
        async with Client(f"http://127.0.0.1:{port}/mcp") as client:
            names = {tool.name for tool in (await client.list_tools()).tools}
            assert "stream_read" in names and "stream_send" not in names and "storage_clear" not in names
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)
