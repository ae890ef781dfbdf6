"""`streammachine run` as a real process: script, module and notebook targets, workers, metrics, signals."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap

import httpx
import pytest

from streammachine.embedded import free_port
from tests.headless.test_metrics import samples_of
from tests.helpers import process_gone, wait_until_sync

# The handler records what it does in Redis, so the test can see in-flight work and every id handled.
HANDLER_BODY = """\
client = await app.redis.get_client()
await client.set("inflight", {msg}.key)
await asyncio.sleep(float({msg}.message.get("sleep", "0")))
await client.rpush("handled", {msg}.key)
await client.hset("handled_by", {msg}.key, os.getpid())
await client.delete("inflight")
"""

SCRIPT = f"""\
import asyncio
import os

from streammachine import App, Message

app = App(name="cli-test")


@app.agent("jobs", group="workers")
async def handle(record: Message):
{textwrap.indent(HANDLER_BODY.format(msg="record"), "    ")}

@app.timer(0.1)
async def tick():
    client = await app.redis.get_client()
    await client.hincrby("timer_pids", os.getpid(), 1)


if __name__ == "__main__":
    raise SystemExit("the runner must not run the __main__ block")
"""


def _notebook(tmp_path):
    def code(source, tags=()):
        return {
            "cell_type": "code",
            "metadata": {"tags": list(tags)},
            "source": source.splitlines(True),
            "outputs": [],
            "execution_count": None,
        }

    cells = [
        {"cell_type": "markdown", "metadata": {}, "source": ["# A pipeline prototyped in Jupyter"]},
        code("%load_ext streammachine"),
        code("import asyncio\nimport os\nfrom streammachine import App\n\napp = App(name='nb-test')"),
        code("%%streammachine agent jobs --group workers\n" + HANDLER_BODY.format(msg="message")),
        code("%streammachine start\n!echo this is a shell escape\nready = await asyncio.sleep(0, result=True)"),
        code("display(app)\napp.dashboard()"),
        code("%%html\n<b>only drawn in a notebook</b>"),
        code("raise RuntimeError('a cell tagged skip-headless must not run')", tags=["skip-headless"]),
        code(
            "assert ready, 'top-level await ran in an earlier cell'\n"
            "assert app.is_running, '%streammachine start started the app, as in the kernel'"
        ),
    ]
    path = tmp_path / "pipeline.ipynb"
    path.write_text(json.dumps({"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    return path


def _module(tmp_path):
    package = tmp_path / "smjobs"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "pipeline.py").write_text(SCRIPT.replace("cli-test", "module-test"))
    return "smjobs.pipeline:app"


def _env(redis_url, **extra):
    env = dict(
        os.environ,
        REDIS_URL=redis_url,
        STREAMMACHINE_COUNT="1",
        STREAMMACHINE_BLOCK_MS="100",
        STREAMMACHINE_GRACE_SECONDS="10",
    )
    env.update(extra)
    return env


class Run:
    """A `streammachine run` process with its output in a file (shown when an assertion fails)."""

    def __init__(self, cmd, env, cwd, log_path):
        self.log_path = log_path
        self.log = open(log_path, "w")
        self.proc = subprocess.Popen(
            cmd, env=env, cwd=cwd, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )

    def output(self) -> str:
        if not self.log.closed:
            self.log.flush()
        return self.log_path.read_text()

    def stop(self, sig=signal.SIGTERM, timeout=30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        finally:
            self.log.close()

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def _wait_for_consumers(sync_redis, stream, group, count, run, timeout=30):
    def ready():
        assert run.proc.poll() is None, f"runner exited early:\n{run.output()}"
        try:
            groups = {g["name"]: g for g in sync_redis.xinfo_groups(stream)}
        except Exception:
            return False
        return group in groups and groups[group]["consumers"] >= count

    wait_until_sync(ready, timeout, what=f"{count} consumer(s) in group {group!r}")


def _pending(sync_redis, stream="jobs", group="workers") -> int:
    return sync_redis.xpending(stream, group)["pending"]


def _run_twice_with_sigterm(cmd, env, cwd, sync_redis, tmp_path):
    """Phase 1: SIGTERM while a handler is in flight; phase 2: a fresh run finishes the rest."""
    run = Run(cmd, env, cwd, tmp_path / "run1.log")
    try:
        _wait_for_consumers(sync_redis, "jobs", "workers", 1, run)
        ids = [sync_redis.xadd("jobs", {"n": str(i), "sleep": "0.25"}) for i in range(6)]
        wait_until_sync(
            lambda: sync_redis.llen("handled") >= 2 and sync_redis.get("inflight"),
            20,
            what="a handler in flight after two handled",
        )
        in_flight = sync_redis.get("inflight")
        code = run.stop(signal.SIGTERM)
        assert code == 0, run.output()
    finally:
        run.kill()
    handled = sync_redis.lrange("handled", 0, -1)
    assert in_flight in handled, "the entry in flight at SIGTERM was finished before exit"
    assert _pending(sync_redis) == 0, "in-flight work was acknowledged; nothing read was left pending"
    assert handled == ids[: len(handled)] and len(handled) < len(ids), "stopped part-way, in order, no repeats"
    assert sync_redis.get("inflight") is None

    run = Run(cmd, env, cwd, tmp_path / "run2.log")
    try:
        wait_until_sync(lambda: sync_redis.llen("handled") == len(ids), 30, what="the rest handled by a new run")
        assert run.stop(signal.SIGINT) == 0, run.output()
    finally:
        run.kill()
    assert sync_redis.lrange("handled", 0, -1) == ids, "every id handled exactly once across the two runs"
    assert _pending(sync_redis) == 0


def test_run_script_target_sigterm_acks_in_flight_work(redis_url, sync_redis, tmp_path):
    script = tmp_path / "jobs_app.py"
    script.write_text(SCRIPT)
    command = shutil.which("streammachine")
    assert command, "the console script is installed"
    _run_twice_with_sigterm([command, "run", str(script)], _env(redis_url), tmp_path, sync_redis, tmp_path)


def test_run_module_target(redis_url, sync_redis, tmp_path):
    target = _module(tmp_path)
    cmd = [sys.executable, "-m", "streammachine", "run", target, "--log-level", "debug"]
    _run_twice_with_sigterm(cmd, _env(redis_url), tmp_path, sync_redis, tmp_path)


def test_run_notebook_target_translates_magics(redis_url, sync_redis, tmp_path):
    notebook = _notebook(tmp_path)
    cmd = [sys.executable, "-m", "streammachine", "run", str(notebook)]
    _run_twice_with_sigterm(cmd, _env(redis_url), tmp_path, sync_redis, tmp_path)


def _scrape(port: int) -> dict:
    """{(name, labels...): value} from a real HTTP GET of /metrics."""
    return samples_of(httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text)


def _total(samples: dict, name: str, **labels) -> float:
    return sum(
        v for (n, ls), v in samples.items() if n == name and all(dict(ls).get(k) == val for k, val in labels.items())
    )


def test_run_two_workers_split_the_stream_and_serve_metrics(redis_url, sync_redis, tmp_path):
    script = tmp_path / "jobs_app.py"
    script.write_text(SCRIPT)
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "streammachine",
        "--redis-url",
        redis_url,
        "run",
        str(script),
        "--workers",
        "2",
        "--metrics-port",
        str(port),
    ]
    env = _env("redis://127.0.0.1:1/0", STREAMMACHINE_CONSUMER_NAME="box")  # --redis-url wins over REDIS_URL
    run = Run(cmd, env, tmp_path, tmp_path / "workers.log")
    try:
        _wait_for_consumers(sync_redis, "jobs", "workers", 2, run)
        names = sorted(c["name"] for c in sync_redis.xinfo_consumers("jobs", "workers"))
        assert names == ["box-w0-cli-test:handle:0", "box-w1-cli-test:handle:0"], "one name per worker"
        ids = [sync_redis.xadd("jobs", {"n": str(i), "sleep": "0.02"}) for i in range(40)]
        wait_until_sync(lambda: sync_redis.hlen("handled_by") == len(ids), 30, what="all 40 entries handled")
        by_worker = sync_redis.hgetall("handled_by")
        assert set(by_worker) == set(ids), "the union of both workers' entries is everything sent"
        pids = set(by_worker.values())
        assert len(pids) == 2, f"both workers handled some entries: {pids}"
        wait_until_sync(
            lambda: sum(int(v) for v in sync_redis.hgetall("timer_pids").values()) >= 3, 10, what="timer runs"
        )
        timer_pids = set(sync_redis.hgetall("timer_pids"))
        assert len(timer_pids) == 1 and timer_pids <= pids, "timers run in one worker only"

        def metrics_caught_up():
            samples = _scrape(port)
            return _total(samples, "streammachine_messages_processed_total") == len(ids) and samples

        samples = wait_until_sync(metrics_caught_up, 15, what="metrics to count all 40 entries")
        per_worker = [_total(samples, "streammachine_messages_processed_total", worker=w) for w in ("0", "1")]
        assert all(n > 0 for n in per_worker) and sum(per_worker) == len(ids)
        assert _total(samples, "streammachine_handler_seconds_count") == len(ids)
        assert _total(samples, "streammachine_handler_seconds_sum") >= len(ids) * 0.02 / 2
        assert _total(samples, "streammachine_messages_failed_total") == 0
        assert _total(samples, "streammachine_group_pending", stream="jobs", group="workers") == 0
        assert _total(samples, "streammachine_group_lag", stream="jobs", group="workers") == 0
        assert _total(samples, "streammachine_workers") == 2
        assert _total(samples, "streammachine_redis_up") == 1
        assert _total(samples, "streammachine_timer_runs_total", worker="0") >= 3
        assert _total(samples, "streammachine_timer_runs_total", worker="1") == 0
        assert run.stop(signal.SIGTERM) == 0, run.output()
    finally:
        run.kill()
    assert _pending(sync_redis) == 0
    assert "stopping 2 workers" in run.output()


def test_run_metrics_single_process_counts_failures_and_dead_letters(redis_url, sync_redis, tmp_path):
    script = tmp_path / "flaky.py"
    script.write_text(
        textwrap.dedent("""\
        from streammachine import App

        app = App(name="flaky")

        @app.agent("orders", group="billing")
        def bill(record):
            if record.message.get("bad"):
                raise ValueError("cannot bill " + record.key)
    """)
    )
    port = free_port()
    env = _env(redis_url, STREAMMACHINE_MAX_DELIVERIES="1", STREAMMACHINE_COUNT="10")
    run = Run(
        [sys.executable, "-m", "streammachine", "run", f"{script}:app", "--metrics-port", str(port)],
        env,
        tmp_path,
        tmp_path / "flaky.log",
    )
    try:
        _wait_for_consumers(sync_redis, "orders", "billing", 1, run)
        for i in range(5):
            sync_redis.xadd("orders", {"n": str(i)})
        sync_redis.xadd("orders", {"bad": "1"})

        def caught_up():  # a scrape may land between the dead-lettering and the batch's count of processed
            samples = _scrape(port)
            done = (
                _total(samples, "streammachine_messages_dead_lettered_total") == 1
                and _total(samples, "streammachine_messages_processed_total", agent="flaky.bill") == 5
            )
            return done and samples

        samples = wait_until_sync(caught_up, 15, what="5 processed and the bad entry dead-lettered")
        assert _total(samples, "streammachine_messages_failed_total") == 1
        assert _total(samples, "streammachine_group_pending", stream="orders") == 0
        assert _total(samples, "streammachine_workers") == 1
        assert sync_redis.xlen("orders:dead") == 1
        assert run.stop() == 0, run.output()
    finally:
        run.kill()


@pytest.mark.parametrize(
    "target, expected",
    [
        ("missing.py", "no such file"),
        ("empty.py", "no streammachine.App found"),
        ("two.py", "several Apps (a, b)"),
        ("two.py:c", "no attribute 'c'"),
        ("no_such_module_xyz:app", "no module named 'no_such_module_xyz'"),
        ("broken.ipynb", "cell 1 raised ZeroDivisionError"),
        ("badmagic.ipynb", "cell 2: %%streammachine agent --group g"),
        ("badmagic.ipynb", "the following arguments are required: stream"),
    ],
)
def test_run_bad_targets_exit_2_with_a_clear_error(tmp_path, target, expected):
    (tmp_path / "empty.py").write_text("x = 1\n")
    (tmp_path / "two.py").write_text("from streammachine import App\na = App('a')\nb = App('b')\n")
    (tmp_path / "broken.ipynb").write_text(
        json.dumps({"cells": [{"cell_type": "code", "metadata": {}, "source": "1 / 0", "outputs": []}], "nbformat": 4})
    )
    (tmp_path / "badmagic.ipynb").write_text(
        json.dumps(
            {
                "cells": [
                    {"cell_type": "code", "metadata": {}, "source": "from streammachine import App\napp = App('x')"},
                    {"cell_type": "code", "metadata": {}, "source": "%%streammachine agent --group g\npass"},
                ],
                "nbformat": 4,
            }
        )
    )
    done = subprocess.run(
        [sys.executable, "-m", "streammachine", "run", target], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2, done.stderr
    assert expected in done.stderr


def test_run_workers_stop_when_the_target_cannot_load(tmp_path):
    (tmp_path / "empty.py").write_text("x = 1\n")
    done = subprocess.run(
        [sys.executable, "-m", "streammachine", "run", "empty.py", "--workers", "2"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "no streammachine.App found" in done.stderr


def test_translate_cell_rules():
    from streammachine.headless.targets import translate_cell

    assert translate_cell("%%html\n<b>x</b>") is None
    assert translate_cell("%%bash\necho hi") is None
    assert translate_cell("%%time\nz = 3") == "z = 3"
    assert translate_cell("%%streammachine agent s\nprint(message)") == "%%streammachine agent s\nprint(message)"
    source = (
        "%load_ext streammachine\n%time x = 1\nif x:\n    %streammachine use app2\n%streammachine start\n"
        "!pip install nothing\ny = (1\n     != 2)\ndisplay(x)\napp.dashboard()\nview = live_line(b, y='v')\n"
        "%streammachine stop"
    )
    assert translate_cell(source).splitlines() == [
        "pass",
        "x = 1",
        "if x:",
        "    __streammachine_use__ = 'app2'",
        "await __streammachine_start__()",
        "pass",
        "y = (1",
        "     != 2)",
        "pass",
        "pass",
        "view = live_line(b, y='v')",
        "pass",
    ]


@pytest.fixture
def black_hole():
    """A TCP server that accepts connections and never answers (a hung proxy, a stopped-but-listening server)."""
    import socket
    import threading

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    listener.settimeout(0.1)
    held, stop = [], threading.Event()

    def accept():
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:  # the accept timeout: look at `stop` again
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"redis://127.0.0.1:{listener.getsockname()[1]}/0"
    stop.set()
    thread.join(5)
    for conn in held:
        conn.close()
    listener.close()


def test_run_workers_give_up_on_a_server_that_never_answers(tmp_path, black_hole):
    """Regression: each worker failed its startup after seconds (not "fast"), so it was restarted forever.
    A worker that exits before it was running counts as a failed start, however long it tried."""
    script = tmp_path / "jobs_app.py"
    script.write_text(SCRIPT)
    cmd = [sys.executable, "-m", "streammachine", "--redis-url", black_hole, "run", str(script), "--workers", "2"]
    try:
        done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=150)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"the supervisor kept restarting workers:\n{exc.stderr}") from None
    assert done.returncode == 1, done.stderr
    assert "exited 3 times in a row before it was running" in done.stderr
    assert done.stderr.count("restarting it") <= 4, "at most 2 restarts per worker slot"


def test_run_workers_second_signal_exits_at_once(redis_url, sync_redis, tmp_path):
    """The first SIGTERM lets handlers in hand finish (grace 60 s); a second one ends workers and supervisor at once."""
    script = tmp_path / "jobs_app.py"
    script.write_text(SCRIPT)
    cmd = [sys.executable, "-m", "streammachine", "run", str(script), "--workers", "2"]
    run = Run(cmd, _env(redis_url, STREAMMACHINE_GRACE_SECONDS="60"), tmp_path, tmp_path / "hurry.log")
    try:
        _wait_for_consumers(sync_redis, "jobs", "workers", 2, run)
        sync_redis.xadd("jobs", {"n": "0", "sleep": "120"})
        wait_until_sync(lambda: sync_redis.get("inflight"), 20, what="a handler in hand")
        wait_until_sync(lambda: sync_redis.hgetall("timer_pids"), 20, what="worker 0's timer")
        worker0 = int(next(iter(sync_redis.hgetall("timer_pids"))))
        run.proc.send_signal(signal.SIGTERM)
        with pytest.raises(subprocess.TimeoutExpired):
            run.proc.wait(1)  # the first signal waits for the handler in hand
        assert run.stop(signal.SIGTERM, timeout=20) == 128 + signal.SIGTERM, run.output()
    finally:
        run.kill()
    assert "exiting at once" in run.output()

    wait_until_sync(lambda: process_gone(worker0), 10, what="the workers to exit with the supervisor")


def test_run_redis_url_is_passed_down_not_written_to_the_environment(redis_url, sync_redis, tmp_path, monkeypatch):
    """Regression: `run --redis-url` wrote os.environ["REDIS_URL"] for the target's App() to find."""
    from streammachine import cli

    monkeypatch.delenv("REDIS_URL", raising=False)  # restored to unset afterwards, whatever happens
    script = tmp_path / "once.py"
    script.write_text(
        textwrap.dedent("""\
        from streammachine import App

        app = App(name="once")

        @app.on_startup
        async def record_and_stop():
            client = await app.redis.get_client()
            await client.set("ran_on", app.redis.safe_url)
            app.stop()  # ends the run: the runner serves while the app runs
    """)
    )
    try:
        assert cli.main(["--redis-url", redis_url, "run", str(script)]) == 0
        assert "REDIS_URL" not in os.environ
        assert sync_redis.get("ran_on") and sync_redis.get("ran_on").startswith("redis://")
        # the runner waited for the shutdown the app started itself (it returned halfway, leaving "stopping")
        assert sys.modules["once"].app.state == "stopped"
    finally:
        sys.modules.pop("once", None)


def test_run_workers_share_the_manager_storage(redis_url, sync_redis, tmp_path):
    """Regression: each `--workers` process had its own Manager, so 400 increments became e.g. 70 and 330."""
    script = tmp_path / "counting.py"
    script.write_text(
        textwrap.dedent("""\
        import os

        from streammachine import App

        app = App(name="counting")

        @app.agent("clicks", group="g")
        async def count(record):
            n = await app.storage.incr("clicks")  # atomic in the one store the workers share
            client = await app.redis.get_client()
            await client.rpush("counts", f"{n} {os.getpid()}")
    """)
    )
    cmd = [sys.executable, "-m", "streammachine", "run", str(script), "--workers", "2"]
    run = Run(cmd, _env(redis_url, STREAMMACHINE_COUNT="10"), tmp_path, tmp_path / "count.log")
    try:
        _wait_for_consumers(sync_redis, "clicks", "g", 2, run)
        pipe = sync_redis.pipeline()
        for i in range(400):
            pipe.xadd("clicks", {"i": i})
        pipe.execute()
        wait_until_sync(lambda: sync_redis.llen("counts") == 400, 30, what="400 increments")
        rows = [line.split() for line in sync_redis.lrange("counts", 0, -1)]
        assert len({pid for _, pid in rows}) == 2, "both workers counted"
        assert sorted(int(n) for n, _ in rows) == list(range(1, 401)), "one store: each increment saw the last"
        assert run.stop() == 0, run.output()
    finally:
        run.kill()
