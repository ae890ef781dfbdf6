"""The MCP server as a real process: `streammachine-mcp` over stdio, `streammachine mcp` over streamable HTTP."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys

import httpx
import httpx2
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from streammachine.embedded import free_port
from tests.helpers import wait_until_sync
from tests.mcp.mcp_client import http_server, listening

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
        wait_until_sync(lambda: proc.poll() is None and listening(port), 30, what="the MCP HTTP server to listen")
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
        wait_until_sync(lambda: proc.poll() is None and listening(port), 30, what="the MCP HTTP server to listen")
        async with Client(f"http://127.0.0.1:{port}/mcp") as client:
            names = {tool.name for tool in (await client.list_tools()).tools}
            assert "stream_read" in names and "stream_send" not in names and "storage_clear" not in names
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)


INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "probe", "version": "1"}},
}


def _post(port: int, headers: dict) -> httpx.Response:
    base = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
    return httpx.post(f"http://127.0.0.1:{port}/mcp", json=INITIALIZE, headers={**base, **headers}, timeout=10)


async def test_http_beyond_loopback_checks_host_origin_and_token(redis_url, sync_redis, tmp_path):
    env = {"REDIS_URL": redis_url, "STREAMMACHINE_MCP_TOKEN": "s3cret-token"}
    with http_server(tmp_path / "server.log", "--host", "0.0.0.0", "--allowed-host", "mcp.example.test", env=env) as (
        port,
        _,
    ):
        token = {"authorization": "Bearer s3cret-token"}
        named = {"host": f"mcp.example.test:{port}"}
        for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": "s3cret-token"}):
            refused = _post(port, headers)
            assert refused.status_code == 401 and "bearer token" in refused.json()["error"]["message"], headers
            assert refused.headers["www-authenticate"].startswith("Bearer")
        assert _post(port, {**token, "host": f"evil.example:{port}"}).status_code == 421, "forged Host"
        assert _post(port, {**token, **named, "origin": "http://evil.example"}).status_code == 403, "forged Origin"
        assert _post(port, {**token, **named}).status_code == 200
        assert _post(port, {**token, **named, "origin": "http://mcp.example.test"}).status_code == 200
        assert _post(port, token).status_code == 200, "loopback names stay allowed"

        http_client = httpx2.AsyncClient(headers=token, timeout=30)
        async with Client(streamable_http_client(f"http://127.0.0.1:{port}/mcp", http_client=http_client)) as client:
            sent = await client.call_tool("stream_send", {"stream": "events", "message": {"a": 1}})
            assert not sent.is_error and sync_redis.xlen("events") == 1
        await http_client.aclose()


@pytest.mark.parametrize(
    "env, needed",
    [({}, "STREAMMACHINE_MCP_TOKEN"), ({"STREAMMACHINE_MCP_TOKEN": "t"}, "--allowed-host")],
    ids=["no-token", "no-allowed-hosts"],
)
def test_http_refuses_an_unprotected_bind_beyond_loopback(redis_url, env, needed):
    done = subprocess.run(
        ["streammachine", "mcp", "--transport", "streamable-http", "--host", "0.0.0.0", "--port", str(free_port())],
        env=dict(os.environ, REDIS_URL=redis_url, **env),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1 and needed in done.stderr, done.stderr


async def test_http_results_and_requests_stay_within_the_limits(redis_url, sync_redis, tmp_path):
    big = sync_redis.xadd("big", {"blob": "b" * 700_000, "n": "1"})
    env = {"REDIS_URL": redis_url, "STREAMMACHINE_MCP_MAX_REQUEST_BYTES": "200000"}
    with http_server(tmp_path / "server.log", env=env) as (port, _):
        async with Client(f"http://127.0.0.1:{port}/mcp") as client:  # the SDK's default client: 1 MiB per event
            read = await client.call_tool("stream_read", {"stream": "big"})
            assert not read.is_error, read.content
            (entry,) = read.structured_content["entries"]
            assert entry["id"] == big and entry["truncated_fields"] == {"blob": 700_000}
            assert read.structured_content["truncated"] is True

            over_tool_limit = [{"pad": "x" * 1000} for _ in range(220)]  # ~225 KB: through HTTP, refused by the tool
            result = await client.call_tool("stream_send_batch", {"stream": "s", "messages": over_tool_limit})
            assert result.is_error and "STREAMMACHINE_MCP_MAX_REQUEST_BYTES" in result.content[0].text
            over_body_limit = [{"pad": "x" * 1000} for _ in range(400)]  # ~410 KB: refused before the SDK
            with pytest.raises(MCPError) as refused:
                await client.call_tool("stream_send_batch", {"stream": "s", "messages": over_body_limit})
            message = str(refused.value)
            assert "limit of 200000 bytes" in message and "split" in message, message
            assert sync_redis.exists("s") == 0
            ok = await client.call_tool("stream_send_batch", {"stream": "s", "messages": over_tool_limit[:150]})
            assert not ok.is_error and sync_redis.xlen("s") == 150, "the session goes on"
