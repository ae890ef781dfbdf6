"""Per-call latency of the MCP server's stream_send and stream_read, against redis-py directly, in one run.

    python benchmarks/bench_mcp.py [--calls 200] [--rounds 3] [--compare-tree /path/to/other/checkout]

One private server. Each variant makes --calls sequential calls of each tool
(after a warm-up) and records every call's wall time:

- direct:     redis.asyncio (hiredis), ``XADD`` and ``XREVRANGE ... COUNT 10``: the floor.
- in-memory:  the SDK's in-process ``Client(server)``: our tool code plus the SDK's dispatch, no transport.
- stdio:      ``python -m streammachine mcp`` as a child process, the SDK's stdio client.
- http:       ``python -m streammachine mcp --transport streamable-http``, the SDK's HTTP client.

stream_send sends ``{"n": i, "symbol": "AAPL", "price": "100.25"}``; stream_read
reads the newest 10 entries. The variants run round by round (order rotating);
the table shows, per variant and tool, the median and p99 over all rounds and
the ratio of the median to direct's median in the same run; for the HTTP
server, also its process CPU per call (ms, median over rounds), which a busy
machine disturbs far less than wall time.

``--compare-tree`` adds the stdio and http variants once more with the server
processes running another checkout's code (PYTHONPATH), e.g. main's, to
measure a change side by side.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Optional

import redis.asyncio as aioredis
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client

from streammachine.embedded import EmbeddedServer, free_port
from streammachine.mcp import build_server

STREAM = "bench:mcp"


def message(i: int) -> dict:
    return {"n": i, "symbol": "AAPL", "price": "100.25"}


async def timed(call, calls: int, warmup: int = 20) -> list:
    for i in range(warmup):
        await call(i)
    samples = []
    for i in range(calls):
        started = time.perf_counter()
        await call(i)
        samples.append(time.perf_counter() - started)
    return samples


async def direct(url: str, calls: int) -> dict:
    client = aioredis.Redis.from_url(url)
    try:
        send = await timed(lambda i: client.xadd(STREAM, message(i)), calls)
        read = await timed(lambda i: client.xrevrange(STREAM, count=10), calls)
    finally:
        await client.aclose()
    return {"stream_send": send, "stream_read": read}


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far (Linux /proc): steadier than wall time under load."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def through(client: Client, calls: int, server_pid: Optional[int] = None) -> dict:
    """Both tools' call latencies; with ``server_pid``, also the server's CPU per call (as a one-item list)."""
    out: dict = {}

    async def measured(name, call):
        before = process_cpu(server_pid) if server_pid else 0.0
        out[name] = await timed(call, calls)
        if server_pid:  # the warm-up calls are in it too
            out[name + " cpu"] = [(process_cpu(server_pid) - before) / (calls + 20)]

    async def send(i):
        result = await client.call_tool("stream_send", {"stream": STREAM, "message": message(i)})
        assert not result.is_error, result.content

    async def read(i):
        result = await client.call_tool("stream_read", {"stream": STREAM, "count": 10, "latest": True})
        assert not result.is_error, result.content

    await measured("stream_send", send)
    await measured("stream_read", read)
    return out


async def in_memory(url: str, calls: int) -> dict:
    server = build_server(redis_url=url)
    async with Client(server) as client:
        return await through(client, calls)


def child_env(url: str, tree: Optional[str] = None) -> dict:
    env = dict(os.environ, REDIS_URL=url, STREAMMACHINE_LOG_LEVEL="WARNING")
    if tree:
        env["PYTHONPATH"] = tree
    return env


async def stdio(url: str, calls: int, tree: Optional[str] = None) -> dict:
    # `python -m` puts the working directory first on sys.path: run the other tree's server from inside it
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "streammachine", "mcp"], env=child_env(url, tree), cwd=tree
    )
    with open(os.devnull, "w") as errlog:
        async with Client(stdio_client(params, errlog=errlog)) as client:
            return await through(client, calls)


def _wait_listening(port: int, proc: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the HTTP server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("the HTTP server did not listen in time")


async def http(url: str, calls: int, tree: Optional[str] = None) -> dict:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "streammachine", "mcp", "--transport", "streamable-http", "--port", str(port)],
        env=child_env(url, tree),
        cwd=tree,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_listening(port, proc)
        async with Client(f"http://127.0.0.1:{port}/mcp") as client:
            return await through(client, calls, server_pid=proc.pid)
    finally:
        proc.terminate()
        proc.wait(15)


VARIANTS = {"direct": direct, "in-memory": in_memory, "stdio": stdio, "http": http}


def p99(samples: list) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--compare-tree", help="also run the stdio and http servers from this checkout")
    args = parser.parse_args()
    variants = dict(VARIANTS)
    if args.compare_tree:
        tree = os.path.abspath(args.compare_tree)
        variants["stdio (other)"] = functools.partial(stdio, tree=tree)
        variants["http (other)"] = functools.partial(http, tree=tree)
    samples: dict = {name: {} for name in variants}
    with tempfile.TemporaryDirectory() as tmp, EmbeddedServer(tmp, appendonly=False) as server:
        names = list(variants)
        for round_number in range(args.rounds):
            for name in names[round_number % len(names) :] + names[: round_number % len(names)]:
                for tool, values in (await variants[name](server.url, args.calls)).items():
                    samples[name].setdefault(tool, []).extend(values)
    print(f"\n{args.calls} calls x {args.rounds} rounds per variant and tool; ms per call\n")
    print(f"{'variant':<14} {'tool':<12} {'median':>8} {'p99':>8} {'x direct':>9} {'server CPU':>11}")
    for name in variants:
        for tool in ("stream_send", "stream_read"):
            values = samples[name][tool]
            median = statistics.median(values)
            base = statistics.median(samples["direct"][tool])
            cpu = samples[name].get(tool + " cpu")
            shown = f"{statistics.median(cpu) * 1000:11.3f}" if cpu else f"{'':>11}"
            print(f"{name:<14} {tool:<12} {median * 1000:8.3f} {p99(values) * 1000:8.3f} {median / base:9.1f} {shown}")


if __name__ == "__main__":
    asyncio.run(main())
