"""The App inside a real ipykernel, driven cell by cell over jupyter_client.

Each test gets its own kernel whose environment points at the test's Redis
(REDIS_URL), so nothing here touches the per-user embedded server. The test
process is the notebook's frontend: between cells it sends nothing, so the
kernel is idle, and it watches Redis directly to see what the kernel did.
"""

from __future__ import annotations

import ast
import os
import shutil
import tempfile
import threading
import time

import pytest
import redis

from tests.helpers import wait_until_sync

SETUP = """
import asyncio
from streammachine import App, ConsumerConfig, TimeSeriesBuffer
from streammachine.notebook import live_line, until
"""


class Kernel:
    """A live kernel and a ``run(code)`` that returns what the cell printed (and raises on error)."""

    def __init__(self, env: dict, cwd: str) -> None:
        from jupyter_client.manager import KernelManager

        # ipc transport: no "running over TCP without encryption" warning, no ports to race for.
        # The socket path must be absolute (the kernel runs in another cwd) and short (sun_path).
        self._sockets = tempfile.mkdtemp(prefix="smk")
        self.manager = KernelManager(kernel_name="python3", transport="ipc", ip=os.path.join(self._sockets, "k"))
        self.manager.start_kernel(env=env, cwd=cwd)
        self.client = self.manager.client()
        self.client.start_channels()
        self.client.wait_for_ready(timeout=60)
        self.displayed: list = []  # mime bundles of everything displayed

    def run(self, code: str, timeout: float = 30) -> str:
        out, errors = [], []

        def hook(msg):
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream":
                out.append(content["text"])
            elif kind in ("execute_result", "display_data"):
                out.append(content["data"].get("text/plain", "") + "\n")
                self.displayed.append(content["data"])
            elif kind == "error":
                errors.append("\n".join(content["traceback"]))

        reply = self.client.execute_interactive(code, timeout=timeout, output_hook=hook)
        if reply["content"]["status"] != "ok":
            raise AssertionError(f"cell failed:\n{code}\n{''.join(errors) or reply['content']}")
        return "".join(out)

    def value(self, expression: str):
        """A Python literal computed in the kernel."""
        return ast.literal_eval(self.run(f"print(repr({expression}))").strip())

    def magic_value(self, line: str):
        """What a line magic returns (magics expand only as statements or assignments)."""
        self.run(f"_magic_result = {line}")
        return self.value("_magic_result")

    def close(self) -> None:
        self.client.stop_channels()
        self.manager.shutdown_kernel(now=True)
        shutil.rmtree(self._sockets, ignore_errors=True)


@pytest.fixture
def kernel(redis_url, tmp_path):
    # os.environ is already stripped of REDIS_*/STREAMMACHINE_* by the autouse fixture
    env = dict(os.environ, REDIS_URL=redis_url, STREAMMACHINE_HOME=str(tmp_path / "smhome"))
    k = Kernel(env, str(tmp_path))
    k.run(SETUP)
    yield k
    try:
        k.run("await app.stop() if 'app' in globals() and app.stop() else None", timeout=20)
    finally:
        k.close()


def group_state(client, stream: str, group: str) -> dict:
    for info in client.xinfo_groups(stream):
        if info["name"] == group:
            return info
    return {}


def fully_consumed(client, stream: str, group: str, count: int) -> bool:
    state = group_state(client, stream, group)
    return state.get("entries-read") == count and state.get("pending") == 0


def test_agent_keeps_consuming_while_kernel_idle_and_live_view_follows(kernel, sync_redis):
    kernel.run("""
app = App("idle", consumer_config=ConsumerConfig(block_ms=100, count=50))
buffer = TimeSeriesBuffer(max_age_seconds=3600)
got = []

@app.agent("readings", group="g")
async def record(message):
    got.append(int(message.message["n"]))
    buffer.append({"timestamp_ms": message.timestamp_ms, "value": float(message.message["n"])})

view = live_line(buffer, y="value", window=40, fps=20)
started = app.start()
""")
    kernel.run("await until(lambda: app.is_running, 20, what='app running')")
    began = time.monotonic()
    # The kernel is idle from here: only Redis tells us what it does.
    for n in range(100):
        sync_redis.xadd("readings", {"n": n})
    wait_until_sync(
        lambda: fully_consumed(sync_redis, "readings", "g", 100), 10, what="100 entries acked by the idle kernel"
    )
    assert kernel.value("sorted(got) == list(range(100))")
    kernel.run("await until(lambda: view.figure.data[0].y is not None and view.figure.data[0].y[-1] == 99.0, 5)")
    first = kernel.value("(view.figure.data[0].y.tolist(), view.frames)")
    for n in range(100, 200):
        sync_redis.xadd("readings", {"n": n})
    wait_until_sync(lambda: fully_consumed(sync_redis, "readings", "g", 200), 10, what="200 entries acked")
    kernel.run("await until(lambda: view.figure.data[0].y[-1] == 199.0, 5)")
    second, frames = kernel.value("(view.figure.data[0].y.tolist(), view.frames)")
    elapsed = time.monotonic() - began
    assert first[0] == list(range(60, 100)) and second == [float(n) for n in range(160, 200)]  # a bounded window
    assert frames > first[1] and frames <= 20 * elapsed + 2  # redrawn as data came, never above 20 fps

    kernel.run("view.close(); closed_at = view.frames")
    for n in range(200, 250):
        sync_redis.xadd("readings", {"n": n})
    wait_until_sync(lambda: fully_consumed(sync_redis, "readings", "g", 250), 10, what="250 entries acked")
    assert kernel.value("(len(got), view.frames == closed_at, view.running)") == (250, True, False)


def test_live_table_follows_a_stage_while_the_kernel_is_idle(kernel, sync_redis):
    kernel.run("""
import time
from streammachine.notebook import live_table
app = App("tables", consumer_config=ConsumerConfig(block_ms=100, count=50))
totals = app.table("totals", default=0)

@app.agent("orders", group="g", output="orders:done", tables=[totals])
async def add(message):
    totals[message.message["customer"]] += int(message.message["amount"])
    return {"customer": message.message["customer"]}

app.start()
await until(lambda: app.is_running, 20, what="app running")
view = live_table(totals, max_rows=2, fps=10)
shown_at = time.monotonic()
view
""")
    assert "application/vnd.jupyter.widget-view+json" in kernel.displayed[-1]
    for n in range(90):  # the kernel is idle from here: the stage commits and the view redraws on its loop
        sync_redis.xadd("orders", {"customer": "abc"[n % 3], "amount": n})
    wait_until_sync(lambda: fully_consumed(sync_redis, "orders", "g", 90), 10, what="90 orders committed")
    expected = {c: sum(n for n in range(90) if "abc"[n % 3] == c) for c in "ab"}
    kernel.run(f"await until(lambda: view.frame['value'].to_dict() == {expected!r}, 10, what='the view')")
    checks = "(view.keys, 'first 2 by key' in view.header.value, view.frames <= 10 * (time.monotonic() - shown_at) + 2)"
    assert kernel.value(checks) == (3, True, True)  # at most fps redraws a second
    kernel.run("view.close()")


AGENT_CELL = """
@app.agent("orders", group="g")
async def handle(message):
    handled.append(({version}, int(message.message["n"])))
"""


def test_hot_reregistration_under_steady_producer_loses_nothing(kernel, sync_redis, redis_url):
    total, rate = 3000, 2000.0  # ~1.5 s of steady traffic
    kernel.run(
        """
handled = []
swaps = []
app = App("swap", consumer_config=ConsumerConfig(block_ms=50, count=20), grace_seconds=5)
"""
        + AGENT_CELL.format(version=1)
        + "\napp.start()"
    )
    kernel.run("await until(lambda: app.is_running, 20, what='app running')")

    producer_client = redis.Redis.from_url(redis_url)
    sent = []

    def produce():
        start = time.monotonic()
        for n in range(total):
            delay = start + n / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)  # pacing in the producer thread, not waiting on a condition
            sent.append(producer_client.xadd("orders", {"n": n}))

    producer = threading.Thread(target=produce)
    producer.start()
    try:
        for version in (2, 3):
            at = len(sent)
            wait_until_sync(lambda: len(sent) >= at + 600, 10, what="the producer to move on")
            kernel.run(AGENT_CELL.format(version=version))  # re-running the cell: same name, new handler
            kernel.run(
                f"await until(lambda: any(v == {version} for v, _ in handled[-50:]), 10, "
                f"what='version {version} handling'); swaps.append(app.last_swap_ms)"
            )
    finally:
        producer.join()
        producer_client.close()
    wait_until_sync(lambda: fully_consumed(sync_redis, "orders", "g", total), 15, what="every entry acked")

    handled = kernel.value("handled")
    numbers = [n for _, n in handled]
    assert sorted(set(numbers)) == list(range(total)), f"lost {sorted(set(range(total)) - set(numbers))[:20]}"
    assert len(numbers) == total, f"{len(numbers) - total} duplicates"
    versions = [v for v, _ in handled]
    assert versions == sorted(versions), "an old handler ran after its replacement had started"
    assert {1, 2, 3} <= set(versions) and versions[-1] == 3
    assert kernel.value("len(app.agents)") == 1
    swap_ms = kernel.value("swaps")
    print("per version", {v: versions.count(v) for v in (1, 2, 3)}, "swap ms", swap_ms)
    assert len(swap_ms) == 2 and all(0 < ms < 2000 for ms in swap_ms), swap_ms


def test_web_dashboard_serves_from_an_idle_kernel(redis_url, tmp_path, sync_redis):
    """App(dashboard_port=...) in a notebook: the dashboard runs on the kernel's own loop and answers while the
    kernel is idle, with the agents' live counters, and it stops with the App."""
    pytest.importorskip("uvicorn")
    pytest.importorskip("sse_starlette")
    import httpx

    from streammachine.embedded import free_port
    from tests.dashboard.dashboard_procs import FAST_ENV

    port = free_port()
    env = dict(os.environ, REDIS_URL=redis_url, STREAMMACHINE_HOME=str(tmp_path / "smhome"), **FAST_ENV)
    kernel = Kernel(env, str(tmp_path))
    base = f"http://127.0.0.1:{port}"
    try:
        kernel.run(SETUP)
        kernel.run(f"""
app = App("notebook-dash", dashboard_port={port})

@app.agent("orders", group="billing")
async def bill(message):
    pass

started = app.start()
await until(lambda: app.is_running, 20, what="app running")
""")
        pid = kernel.value("__import__('os').getpid()")

        def get(path: str):
            try:
                response = httpx.get(base + path, timeout=2)
            except httpx.HTTPError:
                return None
            return response.json() if response.status_code == 200 else None

        # the kernel is idle from here: only its dashboard and Redis tell what it does
        wait_until_sync(lambda: get("/api/health") is not None, 20, what="the kernel's dashboard answering")
        assert get("/api/health")["dashboard"]["owner"]["pid"] == pid
        for n in range(25):
            sync_redis.xadd("orders", {"n": n})

        def billed():
            agents = get("/api/agents") or []
            return [a["processed"] for a in agents if a["name"] == "__main__.bill" and a["app"] == "notebook-dash"]

        wait_until_sync(lambda: billed() == [25], 20, what="25 handled, as the dashboard reports it")
        kernel.run("await app.stop()", timeout=30)
        wait_until_sync(lambda: get("/healthz") is None, 10, what="the dashboard gone with the App")
    finally:
        kernel.close()


def test_magics_drive_the_app(kernel, sync_redis):
    out = kernel.run("""
%load_ext streammachine
app = App("magic", consumer_config=ConsumerConfig(block_ms=50, count=20))
seen = []
""")
    assert out == ""
    out = kernel.run("""%%streammachine agent prices --group watchers
await asyncio.sleep(0)  # an async body: await works
seen.append(("v1", message.message["p"]))
last = message.message["p"]
""")
    assert "agent 'cell_agent:prices:watchers'" in out and "registered" in out
    assert "starting app 'magic'" in kernel.run("%streammachine start")
    kernel.run("await until(lambda: app.is_running, 20)")
    assert "redis://:***@127.0.0.1" in kernel.run("%streammachine server")

    entry_id = kernel.magic_value("%streammachine send prices p=10 note='two words'")
    assert sync_redis.xrange("prices")[0] == (entry_id, {"p": "10", "note": "two words"})
    kernel.run("await until(lambda: seen, 5)")
    assert kernel.value("(seen, last)") == ([("v1", "10")], "10")

    kernel.run("""%%streammachine agent prices --group watchers
seen.append(("v2", message.message["p"]))
""")  # hot swap through the cell magic (sync body this time)
    kernel.run("%streammachine send prices p=11")
    kernel.run("await until(lambda: len(seen) == 2, 5)")
    assert kernel.value("seen") == [("v1", "10"), ("v2", "11")]

    kernel.run("""%%streammachine timer 0.05 --name beat
beats = globals().get("beats", 0) + 1
""")
    kernel.run("await until(lambda: globals().get('beats', 0) >= 3, 5)")
    kernel.run("""%%streammachine timer 0.05 --name beat
beats2 = globals().get("beats2", 0) + 1
""")  # re-running the timer cell with a new body replaces the running timer
    kernel.run("await until(lambda: globals().get('beats2', 0) >= 2, 5); frozen = beats")
    kernel.run("await until(lambda: beats2 >= frozen_2 + 3, 5) if (frozen_2 := beats2) else None")
    assert kernel.value("beats == frozen and len(app.timers) == 1")  # the old body no longer runs

    kernel.run("frame = %streammachine status")
    status = kernel.value(
        "{name: (row.kind, row.processed, row.pending, row.lag, row.failed) for name, row in frame.iterrows()}"
    )
    assert status["cell_agent:prices:watchers"] == ("agent", 2, 0, 0, 0)
    assert status["beat"][0] == "timer" and status["beat"][1] >= 3

    kernel.run("last_entries = %streammachine tail prices -n 1")
    assert kernel.value("last_entries.p.tolist()") == [11]
    info = kernel.magic_value("%streammachine info prices")
    assert info["length"] == 2 and info["groups"][0]["name"] == "watchers" and info["groups"][0]["lag"] == 0

    kernel.run("%streammachine dashboard")
    assert "application/vnd.jupyter.widget-view+json" in kernel.displayed[-1]
    kernel.run("dash = %streammachine dashboard")
    kernel.run("await until(lambda: 'cell_agent:prices:watchers' in dash.table.value, 5); dash.close()")

    assert "removed 'beat'" in kernel.run("%streammachine remove beat")
    assert kernel.value("list(app.timers)") == []
    for bad, message in [
        ("%streammachine send prices p", "expected key=value"),
        ("%streammachine remove nope", "no agent or timer named 'nope'"),
        ("%streammachine info nowhere", "does not exist"),
        ("%streammachine frobnicate", "invalid choice"),
        ("%streammachine use seen", "expected a variable holding an App"),
        ("%%streammachine agent\npass", "required: stream"),
        ("%%streammachine timer -1\npass", "timer -1.0: expected seconds > 0"),
        ("%%streammachine agent s --concurrency 0\npass", "--concurrency 0: expected an int >= 1"),
    ]:
        with pytest.raises(AssertionError, match=message):
            kernel.run(bad)
    kernel.run("other = App('other')")
    with pytest.raises(AssertionError, match="several Apps"):
        kernel.run("%streammachine status")
    assert "using App('magic'" in kernel.run("%streammachine use app")
    assert "stopping app 'magic'" in kernel.run("%streammachine stop")
    kernel.run("await until(lambda: app.state == 'stopped', 10)")

    # a cell registered while the app is still starting (run-all) is registered once it runs
    out = kernel.run("""
%streammachine start
await asyncio.sleep(0)  # the startup task is now waiting on Redis: the app is "starting"
state_then = app.state
get_ipython().run_cell_magic("streammachine", "agent late", "seen.append(('late', message.message['x']))")
""")
    assert kernel.value("state_then") == "starting" and "registering once app 'magic' has started" in out
    kernel.run("await until(lambda: 'cell_agent:late:eventengine' in app.agents and app.is_running, 10)")
    kernel.run("%streammachine send late x=1")
    kernel.run("await until(lambda: ('late', '1') in seen, 5)")


def test_group_magic_lists_resets_and_deletes(kernel, sync_redis):
    for i in range(3):
        sync_redis.xadd("s", {"i": i}, id=f"{1000 + i}-0")
    sync_redis.xgroup_create("s", "g", id="$")
    kernel.run("%load_ext streammachine\napp = App('positions')")
    kernel.run("groups = %streammachine group list s")
    assert kernel.value("groups[['name', 'last_delivered_id']].values.tolist()") == [["g", "1002-0"]]
    with pytest.raises(AssertionError, match="add --yes"):
        kernel.run("%streammachine group reset s g --to start")
    result = kernel.magic_value("%streammachine group reset s g --to 1001 --yes")
    assert result["next_id"] == "1001-0" and result["now"] == "1000-18446744073709551615"
    assert sync_redis.xreadgroup("g", "c", {"s": ">"})[0][1][0][0] == "1001-0"
    with pytest.raises(AssertionError, match="no consumer group 'nope'"):
        kernel.run("%streammachine group delete s nope --yes")
    assert "deleted" in kernel.run("%streammachine group delete s g --yes")
    assert sync_redis.xinfo_groups("s") == []


def test_importing_streammachine_does_not_import_ipython(tmp_path):
    import subprocess
    import sys

    code = (
        "import sys, streammachine, streammachine.notebook, streammachine.cells; "
        "print(sorted(m for m in ('IPython', 'plotly', 'ipywidgets') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_magic_send_honours_stream_maxlen(private_server, tmp_path):
    """Regression: `%streammachine send` passed no maxlen, so STREAMMACHINE_STREAM_MAXLEN never trimmed it
    (app.send and `streammachine send` did trim)."""
    client = redis.Redis.from_url(private_server.url, decode_responses=True)
    client.config_set("stream-node-max-entries", 2)  # MAXLEN ~ 3 then keeps at most 5 entries
    env = dict(
        os.environ,
        REDIS_URL=private_server.url,
        STREAMMACHINE_HOME=str(tmp_path / "smhome"),
        STREAMMACHINE_STREAM_MAXLEN="3",
    )
    kernel = Kernel(env, str(tmp_path))
    try:
        kernel.run(SETUP + "%load_ext streammachine\napp = App('trim')")
        kernel.run("for i in range(20):\n    get_ipython().run_line_magic('streammachine', f'send capped i={i}')")
    finally:
        kernel.close()
    assert 3 <= client.xlen("capped") <= 5
    assert client.xrevrange("capped", count=1)[0][1] == {"i": "19"}
    client.close()


RUN_ALL_CELL = """
from streammachine.app import running_apps
run = globals().get("run", 0) + 1
app = App("orphans", consumer_config=ConsumerConfig(block_ms=50))

@app.timer(0.05, name="beat")
async def beat(run=run):
    await app.send("beats", {"run": run})

app.start()
"""


def test_run_all_twice_leaves_one_app_and_magics_reach_every_app(kernel, sync_redis):
    def beats(run):
        return sum(1 for _, fields in sync_redis.xrange("beats") if fields["run"] == str(run))

    kernel.run("%load_ext streammachine")
    kernel.run(RUN_ALL_CELL)
    wait_until_sync(lambda: beats(1) >= 3, 10, what="the first run's timer")
    out = kernel.run(RUN_ALL_CELL)  # Run All again: a new App of the same name, the old one unreferenced
    assert "replaces the running one" in out
    wait_until_sync(lambda: beats(2) >= 3, 10, what="the second run's timer")
    kernel.run("await until(lambda: len(running_apps()) == 1, 10, what='one app left')")
    frozen = beats(1)
    wait_until_sync(lambda: beats(2) >= 10, 10, what="more beats of the second run")
    assert beats(1) == frozen, "the first App's timer kept running after it was replaced"
    assert kernel.value("[(a.name, a is app) for a in running_apps()]") == [("orphans", True)]

    # lifecycle in cells: idempotent, in order, one line when there is nothing to do
    out = kernel.run("app.start()")
    assert "already running" in out and "Traceback" not in out and len(out.strip().splitlines()) <= 2
    kernel.run("app.stop(); app.start()")
    kernel.run("await until(lambda: app.is_running and app.state == 'running', 10)")
    kernel.run("await app.stop(); await app.stop()")
    assert kernel.value("app.state") == "stopped"

    kernel.run("app.start(); other = App('other'); other.timer(60, name='idle')(lambda: None); other.start()")
    kernel.run("await until(lambda: len(running_apps()) == 2, 10)")
    kernel.run("every = %streammachine status --all")
    assert kernel.value("sorted({name for name, _ in every.index})") == ["orphans", "other"]
    out = kernel.run("%streammachine stop --all")
    assert "stopping app 'orphans'" in out and "stopping app 'other'" in out
    kernel.run("await until(lambda: not running_apps(), 10, what='every app stopped')")
    stopped_at = sync_redis.xlen("beats")
    kernel.run("""
clock = App("clock")
@clock.timer(0.05, name="tick")
async def tick():
    await clock.send("ticks", {"t": 1})
await clock.start()
""")
    wait_until_sync(lambda: sync_redis.xlen("ticks") >= 5, 10, what="five periods of a fresh timer")
    assert sync_redis.xlen("beats") == stopped_at, "a stopped app's timer still ran"
    kernel.run("await clock.stop()")
