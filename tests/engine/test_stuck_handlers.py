"""Issue 11 items 8 and 9: a handler that never returns must not keep `streammachine run` alive."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import redis

from tests.helpers import wait_until_sync

APP = """
import os, time
from streammachine import App

app = App("stuck")

@app.agent("work", group="g", threaded={threaded})
def handle(message):
    open(os.environ["STARTED"], "w").close()
    if {threaded}:
        time.sleep(3600)       # a blocking call that never returns, in a handler thread
    else:
        while True:            # a pure-Python loop on the event loop itself
            pass
"""


def start(tmp_path, redis_url, threaded: bool) -> subprocess.Popen:
    target = tmp_path / "stuck_app.py"
    target.write_text(textwrap.dedent(APP.format(threaded=threaded)))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "STREAMMACHINE_"))}
    env.update(REDIS_URL=redis_url, STARTED=str(tmp_path / "started"), STREAMMACHINE_GRACE_SECONDS="2",
               STREAMMACHINE_HOME=str(tmp_path / "home"), STREAMMACHINE_EMBEDDED="0")  # fmt: skip
    return subprocess.Popen(
        [sys.executable, "-m", "streammachine", "run", str(target)],
        env=env, cwd=tmp_path, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip


def feed_until_stuck(tmp_path, redis_url) -> None:
    client = redis.Redis.from_url(redis_url)
    wait_until_sync(lambda: client.exists("work") and client.xinfo_groups("work"), 30, what="the app's group")
    client.xadd("work", {"n": 1})
    client.close()
    wait_until_sync(lambda: (tmp_path / "started").exists(), 30, what="the handler got stuck")


def test_second_signal_ends_a_process_whose_inline_handler_never_returns(tmp_path, redis_url):
    proc = start(tmp_path, redis_url, threaded=False)
    try:
        feed_until_stuck(tmp_path, redis_url)
        proc.send_signal(signal.SIGTERM)  # the loop is busy: this one can only ask

        def signal_again() -> bool:  # signals sent together coalesce: repeat until one arrives as "the second"
            proc.send_signal(signal.SIGTERM)
            return proc.poll() is not None

        wait_until_sync(signal_again, 15, interval=0.2, what="the process ended by a later signal")
        assert proc.wait(5) == 128 + signal.SIGTERM
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_handler_thread_that_never_returns_does_not_keep_the_process(tmp_path, redis_url):
    proc = start(tmp_path, redis_url, threaded=True)
    try:
        feed_until_stuck(tmp_path, redis_url)
        proc.send_signal(signal.SIGTERM)  # one signal: shutdown (grace 2 s), then exit although the thread hangs
        assert proc.wait(30) == 0, proc.stdout.read().decode(errors="replace")[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
