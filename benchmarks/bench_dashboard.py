"""Agent throughput with the instances registry and the web dashboard on, against both off, in one run.

    python benchmarks/bench_dashboard.py [--entries 200000] [--rounds 5] [--count 1000]

The workload is bench_consume's (its pre-loaded tick stream, its ``drain_agent``:
an ``@app.agent`` with a trivial handler drains the stream through a fresh
group). Two variants, interleaved round by round (the order alternates):

- off: ``STREAMMACHINE_HEARTBEAT_SECONDS=0`` (no registry), no dashboard;
- registry: the heartbeat alone (what every App pays; the dashboard runs in one process of a deployment);
- on:  the registry heartbeat at --heartbeat seconds (default: the shipped 2),
       an elected dashboard served by uvicorn on the same event loop, and one
       viewer (a separate process) holding the page's SSE stream open, so a
       live frame (XINFO of every group, the registry read) is built every second.

Reported: msgs/s (best and median round), this process's CPU per message, and
on/off ratios. The goal: throughput within 2% (ratio >= 0.98).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import statistics
import subprocess
import sys
import tempfile

from bench_consume import drain_agent, preload

from streammachine.config import Settings
from streammachine.embedded import EmbeddedServer, free_port

VIEWER = """
import sys, httpx
with httpx.stream("GET", sys.argv[1], timeout=None) as response:
    announced = False
    for line in response.iter_lines():
        if not announced and line.startswith("event: live"):
            print("connected", flush=True)
            announced = True
"""


async def with_dashboard(url: str, heartbeat: float, job):
    from streammachine.dashboard.candidate import DashboardCandidate
    from streammachine.redis.connection import RedisConnection

    settings = dataclasses.replace(Settings.from_env(), heartbeat_seconds=heartbeat)
    connection = RedisConnection(url=url, settings=settings)
    port = free_port()
    candidate = DashboardCandidate(connection, host="127.0.0.1", port=port, token=None, lock_ttl=10)
    await candidate.start()
    while candidate.serving is None:
        await asyncio.sleep(0.05)
    viewer = subprocess.Popen(
        [sys.executable, "-c", VIEWER, f"http://127.0.0.1:{port}/api/events"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert viewer.stdout is not None
        await asyncio.to_thread(viewer.stdout.readline)  # the viewer's start-up is not timed

        with settings.use():  # the App that drain_agent makes takes these: its heartbeat runs
            return await job()
    finally:
        viewer.terminate()
        viewer.wait()
        await candidate.stop()
        await connection.close()


async def without(job, heartbeat: float = 0):
    settings = dataclasses.replace(Settings.from_env(), heartbeat_seconds=heartbeat)
    with settings.use():
        return await job()


async def run(args: argparse.Namespace, url: str) -> dict:
    await preload(url, args.entries)
    results: dict = {"off": [], "registry": [], "on": []}
    variants = list(results)
    for rnd in range(args.rounds):
        order = variants[rnd % 3 :] + variants[: rnd % 3]  # the order rotates: drift hits every variant alike
        for variant in order:
            group = f"g{rnd}-{variant}"

            def job(group=group):
                return drain_agent(url, group, args.count, args.entries, False)

            if variant == "on":
                wall, cpu = await with_dashboard(url, args.heartbeat, job)
            else:
                wall, cpu = await without(job, args.heartbeat if variant == "registry" else 0)
            results[variant].append((args.entries / wall, cpu / args.entries * 1e6))
            print(
                f"  round {rnd + 1}: {variant:<8} {args.entries / wall:>12,.0f} msgs/s "
                f"{cpu / args.entries * 1e6:>7.2f} us CPU/msg",
                file=sys.stderr,
                flush=True,
            )
    return results


def table(results: dict, args: argparse.Namespace) -> str:
    def stats(variant: str) -> tuple:
        rates = [r for r, _ in results[variant]]
        return max(rates), statistics.median(rates), min(c for _, c in results[variant])

    off, registry, on = stats("off"), stats("registry"), stats("on")
    lines = [
        f"entries={args.entries:,} COUNT={args.count} rounds={args.rounds} heartbeat={args.heartbeat}s uvloop=yes",
        f"{'variant':<40}{'best msgs/s':>12}{'median':>10}{'CPU us/msg':>11}",
        f"{'off (no registry, no dashboard)':<40}{off[0]:>12,.0f}{off[1]:>10,.0f}{off[2]:>11.2f}",
        f"{'registry (heartbeat only)':<40}{registry[0]:>12,.0f}{registry[1]:>10,.0f}{registry[2]:>11.2f}",
        f"{'on (heartbeat + dashboard + SSE viewer)':<40}{on[0]:>12,.0f}{on[1]:>10,.0f}{on[2]:>11.2f}",
        f"registry/off: best {registry[0] / off[0]:.3f}, median {registry[1] / off[1]:.3f}, "
        f"CPU/msg {registry[2] / off[2]:.3f}",
        f"on/off: best {on[0] / off[0]:.3f}, median {on[1] / off[1]:.3f}, CPU/msg {on[2] / off[2]:.3f} "
        "(goal: throughput ratio >= 0.98)",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", type=int, default=200_000, help="entries drained per variant and round")
    parser.add_argument("--count", type=int, default=1000, help="XREADGROUP COUNT")
    parser.add_argument("--rounds", type=int, default=5, help="rounds (best and median are reported)")
    parser.add_argument("--heartbeat", type=float, default=2.0, help="registry heartbeat interval (s) when on")
    args = parser.parse_args()

    import uvloop

    with tempfile.TemporaryDirectory() as tmp, EmbeddedServer(tmp) as server:
        results = uvloop.run(run(args, server.url))
    print(table(results, args))


if __name__ == "__main__":
    main()
