"""Notebook responsiveness under load: live plot refresh rate, cell latency, hot-swap time.

    python benchmarks/bench_notebook.py [--entries 1500000] [--rate 60000] [--window 6] [--fps 20] [--swaps 5]

A private server (appendonly=False) is pre-loaded with tick-like entries; a
real ipykernel (jupyter_client, as a frontend would drive it) runs an App
whose batch agent drains that backlog (group from id 0) into a
TimeSeriesBuffer, with a ``live_line`` chart on the buffer. The backlog lets
the agent run flat out (the kernel's CPU saturated) without a producer
competing for the CPU; a second phase feeds it at a steady --rate from a
producer process instead, the realistic case.

Measured in the same run:

- baseline: round trip of a trivial cell (execute_request -> execute_reply)
  on the idle kernel, before the app starts;
- under load: the agent's consumption rate (acked entries, read from Redis
  by this process), the chart's refresh rate (FigureWidget updates counted
  on IOPub, i.e. what reaches a frontend), and the trivial-cell round trip;
- hot swap: ``app.last_swap_ms`` over --swaps re-registrations under load.

Goals: >= 50k msg/s consumed while the chart refreshes at >= 10 fps, a
trivial cell < 100 ms, a swap < 100 ms.

Per-frame cost of a chart of a fast stream (``--frames-only`` runs just
this, in-process, no server): a 20k msg/s stream in a 10 s time window,
drawn with every point (the whole-array path), with ``max_points``
(min/max per bucket), and by ``live_stream_line`` (only new points, extended
in the browser), side by side in the same run: bytes put on the widget's
comm per frame (what travels to the browser) and CPU per frame.

At these rates the kernel's full (generation 2) garbage collections, which
walk the whole heap (pandas, plotly, ipykernel: ~100+ ms here), are what
delays cells; --gc-freeze shows the effect of ``gc.freeze()`` after setup.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import sys
import tempfile
import threading
import time

import redis
from jupyter_client.manager import KernelManager

from streammachine.embedded import EmbeddedServer

STREAM, GROUP = "bench:nb", "bench"

KERNEL_SETUP = """
import numpy as np
from streammachine import App, ConsumerConfig, TimeSeriesBuffer
from streammachine.notebook import live_line, until

app = App("bench", consumer_config=ConsumerConfig(count=1000, block_ms=100, start_id="0"))
buffer = TimeSeriesBuffer(max_age_seconds=3600, max_rows=20000)
consumed = 0

def make_handler(version):
    async def consume(messages):
        global consumed
        consumed += len(messages)
        buffer.append({
            "timestamp_ms": np.fromiter((m.timestamp_ms for m in messages), np.int64, len(messages)),
            "price": np.fromiter((float(m.fields[b"price"]) for m in messages), np.float64, len(messages)),
        })
    return consume

def register(version):
    app.agent(STREAM, group=GROUP, batch=True, name="consume")(make_handler(version))

register(0)
"""


def percentile(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def summary(values) -> str:
    return (
        f"p50 {percentile(values, 0.5):6.1f}  p95 {percentile(values, 0.95):6.1f}  "
        f"max {max(values):6.1f}  (n={len(values)})"
    )


def preload(url: str, entries: int) -> None:
    client = redis.Redis.from_url(url)
    pipe = client.pipeline(transaction=False)
    for i in range(entries):
        pipe.xadd(STREAM, {"symbol": "AAPL", "price": f"{100 + (i % 997) * 0.01:.2f}", "size": str(1 + i % 500)})
        if i % 5000 == 4999:
            pipe.execute()
    pipe.execute()
    client.close()


def acked(client) -> int:
    for group in client.xinfo_groups(STREAM):
        if group["name"] in (GROUP, GROUP.encode()):
            return group["entries-read"] - group["pending"]
    return 0


class Frontend:
    """A kernel client that counts the chart's updates on IOPub and times execute round trips."""

    def __init__(self, env: dict) -> None:
        self._sockets = tempfile.mkdtemp(prefix="smb")
        self.manager = KernelManager(kernel_name="python3", transport="ipc", ip=os.path.join(self._sockets, "k"))
        self.manager.start_kernel(env=env, cwd=self._sockets)
        self.client = self.manager.client()
        self.client.start_channels()
        self.client.wait_for_ready(timeout=60)
        self.updates: list[float] = []  # arrival times of FigureWidget updates
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._drain = threading.Thread(target=self._drain_iopub, daemon=True)
        self._drain.start()

    def _drain_iopub(self) -> None:
        while not self._stop.is_set():
            try:
                msg = self.client.iopub_channel.get_msg(timeout=0.1)
            except Exception:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind == "comm_msg" and content.get("data", {}).get("state", {}).get("_py2js_update"):
                self.updates.append(time.monotonic())
            elif kind == "error":
                self.errors.append("\n".join(content["traceback"]))

    def execute(self, code: str, timeout: float = 60) -> float:
        """Round trip in ms: execute_request sent -> execute_reply received."""
        started = time.perf_counter()
        msg_id = self.client.execute(code)
        while True:
            reply = self.client.get_shell_msg(timeout=timeout)
            if reply["parent_header"].get("msg_id") == msg_id:
                break
        elapsed = (time.perf_counter() - started) * 1000
        if reply["content"]["status"] != "ok":
            raise RuntimeError(f"cell failed: {code}\n{reply['content'].get('evalue')}\n" + "\n".join(self.errors[-1:]))
        return elapsed

    def value(self, expression: str):
        msg_id = self.client.execute(f"__bench_value = {expression}", user_expressions={"v": "__bench_value"})
        while True:
            reply = self.client.get_shell_msg(timeout=60)
            if reply["parent_header"].get("msg_id") == msg_id:
                break
        result = reply["content"]["user_expressions"]["v"]
        return eval(result["data"]["text/plain"])  # our own kernel's repr of a number or a list

    def close(self) -> None:
        self._stop.set()
        self._drain.join(2)
        self.client.stop_channels()
        self.manager.shutdown_kernel(now=True)
        shutil.rmtree(self._sockets, ignore_errors=True)


def trivial_cells(frontend: Frontend, seconds: float, gap: float = 0.05) -> list[float]:
    latencies = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        latencies.append(frontend.execute("pass"))
        time.sleep(gap)  # a person does not fire cells back to back; neither do we
    return latencies


def paced_producer(url: str, rate: float, stop) -> None:
    """A separate process writing ``rate`` entries/s in pipelined chunks (runs until ``stop`` is set)."""
    client = redis.Redis.from_url(url)
    chunk = 500
    started, sent = time.monotonic(), 0
    while not stop.is_set():
        pipe = client.pipeline(transaction=False)
        for i in range(sent, sent + chunk):
            pipe.xadd(STREAM, {"symbol": "AAPL", "price": f"{100 + (i % 997) * 0.01:.2f}", "size": str(1 + i % 500)})
        pipe.execute()
        sent += chunk
        ahead = started + sent / rate - time.monotonic()
        if ahead > 0:
            time.sleep(ahead)  # pacing
    client.close()


def measure_under_load(frontend: Frontend, probe, seconds: float) -> dict:
    acked0, frames0, updates0, start = (
        acked(probe),
        frontend.value("view.frames"),
        len(frontend.updates),
        time.monotonic(),
    )
    latencies = trivial_cells(frontend, seconds)
    elapsed = time.monotonic() - start
    acked1, frames1, updates1 = acked(probe), frontend.value("view.frames"), len(frontend.updates)
    return {
        "rate": (acked1 - acked0) / elapsed,
        "fps_iopub": (updates1 - updates0) / elapsed,
        "fps_kernel": (frames1 - frames0) / elapsed,
        "latencies": latencies,
        "elapsed": elapsed,
        "queued": probe.xlen(STREAM) - acked1,
        "render_ms": frontend.value("view.last_render_ms"),
    }


def report(label: str, result: dict, fps_cap: float) -> None:
    print(f"\n{label} ({result['elapsed']:.1f}s window; {result['queued']:,} entries queued at its end)")
    print(f"  consumed            {result['rate']:12,.0f} msg/s   (goal >= 50,000)")
    print(f"  chart refresh       {result['fps_iopub']:12.1f} fps     on IOPub (cap {fps_cap:g}; goal >= 10)")
    print(
        f"                      {result['fps_kernel']:12.1f} fps     redrawn in the kernel; last redraw "
        f"{result['render_ms']:.1f} ms"
    )
    print(f"  trivial cell (ms)   {summary(result['latencies'])}   (goal < 100)")


def frame_costs(rate: int = 20_000, seconds: float = 10.0, fps: float = 10.0, frames: int = 20) -> dict:
    """Bytes on the comm and CPU per frame: whole arrays vs ``max_points`` (see the module docstring)."""
    import json

    import comm
    import numpy as np
    import pandas as pd
    from comm.base_comm import BaseComm

    from streammachine import TimeSeriesBuffer
    from streammachine.notebook.live import LiveLine
    from streammachine.notebook.stream_line import LiveStreamLine

    sent = [0]

    class RecordingComm(BaseComm):
        def publish_msg(self, msg_type, data=None, metadata=None, buffers=None, **keys):
            sent[0] += len(json.dumps(data, default=str)) + sum(memoryview(b).nbytes for b in buffers or ())

    comm.create_comm = RecordingComm  # what a kernel's comm would send, counted instead of sent
    per_frame = int(rate / fps)
    clock = [1_700_000_000_000.0]
    rng = np.random.default_rng(1)

    def feed(buffer: TimeSeriesBuffer, rows: int) -> None:
        stamps = clock[0] + np.arange(1, rows + 1) * (1000.0 / rate)
        clock[0] = float(stamps[-1])
        buffer.append(pd.DataFrame({"timestamp_ms": stamps, "price": 100 + rng.normal(0, 1, rows).cumsum()}))

    results = {}
    for label, max_points in (("whole arrays", None), ("max_points=2000", 2000), ("new points only", 2000)):
        buffer = TimeSeriesBuffer(max_age_seconds=seconds)
        feed(buffer, int(rate * seconds))
        if label == "new points only":  # live_stream_line: the anywidget view that extends traces in the browser
            view = LiveStreamLine(buffer, "price", window=f"{seconds:g}s", fps=fps, max_points=max_points)
        else:
            view = LiveLine(buffer, "price", window=f"{seconds:g}s", fps=fps, max_points=max_points)
        view.refresh(force=True)  # the first frame: the widget's whole state
        sent[0], cpu, points = 0, 0.0, 0
        for _ in range(frames):
            feed(buffer, per_frame)
            started = time.process_time()
            view.refresh(force=True)
            cpu += time.process_time() - started
            points += view.points_sent
        results[label] = {"bytes": sent[0] / frames, "cpu_ms": cpu * 1000 / frames, "points": points / frames}
        view.close()
    return results


def report_frames(results: dict) -> None:
    whole, sampled, extended = results["whole arrays"], results["max_points=2000"], results["new points only"]
    print("\nchart of a 20k msg/s stream, 10 s window, per frame (same run):")
    for label, r in results.items():
        print(f"  {label:<16} {r['points']:>9,.0f} points  {r['bytes'] / 1024:>9,.1f} KiB  {r['cpu_ms']:>7.1f} ms CPU")
    print(
        f"  ratio whole/max_points: bytes x{whole['bytes'] / sampled['bytes']:.0f}, "
        f"CPU x{whole['cpu_ms'] / sampled['cpu_ms']:.1f}; whole/new points only: bytes "
        f"x{whole['bytes'] / extended['bytes']:.0f}, CPU x{whole['cpu_ms'] / extended['cpu_ms']:.1f}"
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=2_000_000, help="backlog for the flat-out phase")
    parser.add_argument("--rate", type=float, default=60_000, help="entries/s of the paced phase (0: skip it)")
    parser.add_argument("--window", type=float, default=6.0, help="seconds measured per phase")
    parser.add_argument("--fps", type=float, default=20.0, help="the chart's frame-rate cap")
    parser.add_argument("--swaps", type=int, default=5)
    parser.add_argument("--gc-freeze", action="store_true", help="gc.freeze() in the kernel once the app runs")
    parser.add_argument("--frames-only", action="store_true", help="only the per-frame cost of a fast-stream chart")
    args = parser.parse_args(argv)
    if args.frames_only:
        report_frames(frame_costs())
        return 0

    data_dir = tempfile.mkdtemp(prefix="sm-bench-nb-")
    server = EmbeddedServer(data_dir, appendonly=False).start()
    frontend = producer = None
    stop_producer = multiprocessing.Event()
    try:
        t0 = time.monotonic()
        preload(server.url, args.entries)
        print(
            f"preloaded {args.entries:,} entries in {time.monotonic() - t0:.1f}s; load average "
            f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs (other work on the machine skews these figures)"
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "STREAMMACHINE_"))}
        env.update(REDIS_URL=server.url, STREAMMACHINE_HOME=os.path.join(data_dir, "home"))
        frontend = Frontend(env)
        frontend.execute(KERNEL_SETUP.replace("STREAM", repr(STREAM)).replace("GROUP", repr(GROUP)))
        frontend.execute(f"view = live_line(buffer, y='price', window=1000, fps={args.fps})")

        idle = trivial_cells(frontend, 3.0)
        probe = redis.Redis.from_url(server.url)
        frontend.execute("app.start()\nawait until(lambda: app.is_running and consumed > 0, 60)")
        if args.gc_freeze:
            # everything alive now (imports, plotly, the app) leaves the cyclic GC's view: full
            # collections then scan only what came after, instead of ~100 ms over the whole heap
            frontend.execute("import gc; gc.freeze()")
        time.sleep(1.0)  # warm-up under load before measuring
        flat_out = measure_under_load(frontend, probe, args.window)

        swaps = []
        for version in range(1, args.swaps + 1):
            frontend.execute("app.last_swap_ms = None")
            frontend.execute(f"register({version})\nawait until(lambda: app.last_swap_ms is not None, 10)")
            swaps.append(frontend.value("app.last_swap_ms"))

        paced = None
        if args.rate > 0:
            frontend.execute("await until(lambda: consumed >= " + str(args.entries) + ", 60)")  # backlog drained
            producer = multiprocessing.Process(target=paced_producer, args=(server.url, args.rate, stop_producer))
            producer.start()
            time.sleep(1.0)  # warm-up
            paced = measure_under_load(frontend, probe, args.window)
        frontend.execute("view.stop()\nawait app.stop()")
        probe.close()

        print(f"\ngc.freeze() in the kernel: {'yes' if args.gc_freeze else 'no'}")
        print("trivial cell round trip, idle kernel (baseline, ms)  " + summary(idle))
        report("flat out: the agent drains a backlog", flat_out, args.fps)
        if paced is not None:
            report(f"paced: a producer process sends {args.rate:,.0f} entries/s", paced, args.fps)
        print(f"\nhot swap under load (app.last_swap_ms, ms)  {summary(swaps)}   (goal < 100)")
        report_frames(frame_costs())
        if flat_out["queued"] <= 0:
            print("WARNING: the backlog ran out inside the window: raise --entries", file=sys.stderr)
        if frontend.errors:
            print("kernel errors:\n" + "\n".join(frontend.errors), file=sys.stderr)
            return 1
        return 0
    finally:
        stop_producer.set()
        if producer is not None:
            producer.join(10)
        if frontend is not None:
            frontend.close()
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
