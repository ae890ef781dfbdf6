"""`streammachine dashboard`: a dashboard process of its own shows the Apps of a whole deployment."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import httpx
import pytest

from streammachine import App
from streammachine.testing import FAST
from tests.dashboard.test_dashboard import fast_settings, free_port
from tests.helpers import wait_until

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")


def _get(url: str):
    try:
        return httpx.get(url, timeout=2)
    except httpx.HTTPError:
        return None


async def test_standalone_dashboard_lists_the_apps_of_its_redis_and_drops_a_stopped_one(redis_url, tmp_path):
    port = free_port()
    env = dict(
        os.environ,
        REDIS_URL=redis_url,
        STREAMMACHINE_HOME=str(tmp_path / "home"),
        STREAMMACHINE_HEARTBEAT_SECONDS="0.2",
        STREAMMACHINE_INSTANCE_TTL="1",
        STREAMMACHINE_DASHBOARD_LOCK_TTL="1.5",
    )
    log = open(tmp_path / "dashboard.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streammachine", "dashboard", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    app = App("standalone-watched", redis_url=redis_url, consumer_config=FAST, settings=fast_settings())

    @app.agent("orders", group="billing")
    async def bill(msg):
        pass

    try:
        await wait_until(
            lambda: (r := _get(f"{base}/healthz")) is not None and r.status_code == 200,
            timeout=30,
            what="the standalone dashboard to serve",
        )
        await app.start()

        def listed() -> bool:
            response = _get(f"{base}/api/instances")
            return response is not None and any(i["name"] == "standalone-watched" for i in response.json())

        await wait_until(listed, timeout=15, what="the App in the standalone dashboard's instances")
        [instance] = [i for i in _get(f"{base}/api/instances").json() if i["name"] == "standalone-watched"]
        assert instance["pid"] == os.getpid() and [a["stream"] for a in instance["agents"]] == ["orders"]
        await app.stop()
        await wait_until(lambda: not listed(), timeout=15, what="the stopped App to leave the instances")
        assert proc.poll() is None, "the dashboard outlives the Apps it shows"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    finally:
        if app.state == "running":
            await app.stop()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
    output = (tmp_path / "dashboard.log").read_text()
    assert "Traceback" not in output, output[-2000:]
    assert redis_url.split(":")[2].split("@")[0] not in output, "the password never reaches the log"
