"""Running short of file descriptors (issue 11 item 19): a real `streammachine run` process under a low RLIMIT_NOFILE.

Before: 150 agents under a soft limit of 128 opened connections until EMFILE, then failed quietly while
health said "healthy". Now the App counts its connections at start, raises the soft limit when the hard one
allows, and otherwise refuses to start, naming the numbers.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import time

import pytest
import redis

from tests.helpers import wait_until

from .faultkit import Ledger, check, tally

pytestmark = [pytest.mark.fault, pytest.mark.timeout(120)]

AGENTS = 150
LOW = 128
APP = f"""
import os, sys
sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r})
from faultkit import Ledger, seq_of
from streammachine import App

app = App("many-agents")
ledger = Ledger(os.environ["FAULT_LEDGER"])

def make(i):
    @app.agent(f"files:{{i}}", group="g", name=f"a{{i}}")
    async def handle(message):
        ledger.record(seq_of(message))

for i in range({AGENTS}):
    make(i)

@app.on_startup
async def ready():
    print("READY", flush=True)
"""


def spawn(tmp_path, url: str, soft: int, hard: int) -> subprocess.Popen:
    target = tmp_path / "many_agents.py"
    target.write_text(APP)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "STREAMMACHINE_"))}
    env.update(
        REDIS_URL=url,
        FAULT_LEDGER=str(tmp_path / "handled"),
        STREAMMACHINE_HOME=os.environ["STREAMMACHINE_HOME"],
        STREAMMACHINE_BLOCK_MS="100",
    )
    return subprocess.Popen(
        [sys.executable, "-m", "streammachine", "run", str(target)],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard)),
    )


def soft_limit_of(pid: int) -> int:
    for line in open(f"/proc/{pid}/limits"):
        if line.startswith("Max open files"):
            return int(line.split()[3])
    raise AssertionError("no open-file limit in /proc")


async def test_the_soft_limit_is_raised_for_what_the_app_opens(redis_url, tmp_path):
    started = time.monotonic()
    ledger = Ledger(tmp_path / "handled")
    proc = spawn(tmp_path, redis_url, LOW, 4096)
    client = redis.Redis.from_url(redis_url)
    try:
        line = proc.stdout.readline()
        assert b"READY" in line, proc.stderr.read().decode(errors="replace")[-3000:]
        for i in range(AGENTS):
            client.xadd(f"files:{i}", {"seq": i})
        await wait_until(lambda: len(ledger.counts()) == AGENTS, 30, what=f"one record handled by each of {AGENTS}")
        assert soft_limit_of(proc.pid) > 2 * AGENTS
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        assert b"Too many open files" not in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        client.close()
    result = tally(
        f"open-file limit {LOW} (hard 4096), {AGENTS} agents in one process", range(AGENTS), ledger.counts(), 0, started
    )
    check(result)


def test_a_hard_limit_too_low_stops_the_start_naming_the_numbers(redis_url, tmp_path):
    proc = spawn(tmp_path, redis_url, LOW, LOW)
    try:
        code = proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err = proc.stderr.read().decode(errors="replace")
    assert code == 1, err[-3000:]
    assert f"{AGENTS} consumers x 2 connections" in err and f"open-file limit is {LOW} (hard limit {LOW})" in err, err
    assert "ulimit -n" in err and "Traceback" not in err
