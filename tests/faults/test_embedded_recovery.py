"""The embedded server dies under running apps (issue 11 item 3): a SIGKILL of the per-user valkey-server.

Before: apps retried forever against a dead port, and `streammachine server start` brought the server back on a
new port and password that running apps never learnt. Now the server keeps its URL across restarts, and the
process that started it (a notebook, an app) starts it again when it dies.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from streammachine import App
from streammachine.embedded import read_runtime_file
from tests.helpers import port_is_free, wait_until

from .faultkit import Ledger, Producer, check, seq_of, tally
from .test_faults import KNOBS, PER_KILL, drain

pytestmark = [
    pytest.mark.fault,
    pytest.mark.timeout(180),
    pytest.mark.skipif(not port_is_free(6379), reason="something listens on localhost:6379: no embedded fallback"),
]

HERE = Path(__file__).parent


def home() -> Path:
    return Path(os.environ["STREAMMACHINE_HOME"])


def fsync_always(url: str) -> None:
    """So a SIGKILL loses nothing the server confirmed (the default everysec may lose the last second)."""
    client = redis.Redis.from_url(url)
    client.config_set("appendfsync", "always")
    client.close()


def kill_server() -> int:
    pid = read_runtime_file(home())["pid"]
    os.kill(pid, signal.SIGKILL)
    return pid


async def test_the_process_that_started_the_server_starts_it_again(tmp_path):
    """As in a notebook: nothing configured, the App starts the embedded server; SIGKILL it mid-stream."""
    started = time.monotonic()
    ledger = Ledger(tmp_path / "handled")
    app = App("owner", consumer_config=KNOBS, grace_seconds=5)  # nothing configured: the embedded fallback

    @app.agent("ticks", group="g", concurrency=2, name="w")
    async def work(message):
        ledger.record(seq_of(message))

    await app.startup()
    try:
        url = read_runtime_file(home())["url"]
        assert app.redis.url == url
        fsync_always(url)
        producer = Producer(app, "ticks", batch=20, interval=0.005)
        await producer.send(600)
        await wait_until(lambda: ledger.unique() > 300, 15, what="consumers running before the crash")
        sending = asyncio.ensure_future(producer.send(1200, deadline=90))
        await wait_until(lambda: producer.next_seq > 900, 15, what="producer mid-stream")
        killed = kill_server()
        await wait_until(lambda: app.stats("w").reconnects > 0, 10, what="consumers notice the crash")
        await wait_until(
            lambda: (read_runtime_file(home()) or {}).get("pid") not in (None, killed),
            30,
            what="the server started again by its owner",
        )
        assert read_runtime_file(home())["url"] == url  # same port and password: every client reconnects
        await sending
        await drain(ledger, producer, 60, "after the embedded server was killed")
    finally:
        await app.shutdown()
    result = tally(
        "embedded server SIGKILL, started again by the app that owns it",
        producer.confirmed,
        ledger.counts(),
        bound=2 * PER_KILL + producer.ambiguous,
        started=started,
    )
    check(result)


def cli(*args: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "streammachine", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_server_start_brings_it_back_where_running_apps_look(tmp_path):
    """A headless app that did not start the server (the CLI did) waits for it; `streammachine server start`
    after the crash reuses the port and password, so the app carries on without a restart."""
    started = time.monotonic()
    ledger = Ledger(tmp_path / "handled")
    assert cli("server", "start").returncode == 0
    url = read_runtime_file(home())["url"]
    fsync_always(url)
    app_env = {
        k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "STREAMMACHINE_"))
    }  # nothing configured: the app attaches to the embedded server through the fallback
    app_env.update(
        STREAMMACHINE_HOME=str(home()),
        FAULT_STREAM="orders",
        FAULT_LEDGER=str(ledger.path),
        STREAMMACHINE_COUNT="20",
        STREAMMACHINE_BLOCK_MS="100",
        STREAMMACHINE_RETRY_DELAY_MS="50",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "streammachine", "run", str(HERE / "fault_app.py")],
        env=app_env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    producer_app = App("producer", redis_url=url, consumer_config=KNOBS)
    try:
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 30)
        assert b"READY" in line, proc.stderr.read().decode(errors="replace")[-3000:]
        producer = Producer(producer_app, "orders", batch=20, interval=0.005)
        await producer.send(600)
        await wait_until(lambda: ledger.unique() > 300, 15, what="the app consuming before the crash")
        sending = asyncio.ensure_future(producer.send(1200, deadline=90))
        await wait_until(lambda: producer.next_seq > 900, 15, what="producer mid-stream")
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        kill_server()
        await wait_until(lambda: port_is_free(port, "127.0.0.1"), 10, what="the killed server's port released")
        assert cli("server", "start").returncode == 0
        assert read_runtime_file(home())["url"] == url, "server start moved the server: running apps lose it"
        await sending
        await drain(ledger, producer, 60, "after `streammachine server start`")
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        await producer_app.shutdown()
    result = tally(
        "embedded server SIGKILL, `streammachine server start` again (same port and password)",
        producer.confirmed,
        ledger.counts(),
        bound=PER_KILL + producer.ambiguous,
        started=started,
    )
    check(result)
