"""Apps as real `streammachine run` processes, for the dashboard's failover and browser tests."""

from __future__ import annotations

import os
import sys
import textwrap

from test_cli_run import Run

# Producer and consumer in one app: the timer sends a random number of entries each tick, so rates move.
TARGET = textwrap.dedent(
    """\
    import asyncio
    import os
    import random

    from streammachine import App

    NAME = os.environ["DEMO_APP"]
    STREAM = NAME + ":events"
    app = App(NAME)


    @app.agent(STREAM, group="workers", concurrency=2)
    async def handle(msg):
        await asyncio.sleep(0.001)
        if msg.message.get("n") == "13" and random.random() < 0.05:
            raise ValueError("unlucky 13")


    @app.timer(0.2)
    async def produce():
        count = random.randint(2, 40)
        await app.send_batch(STREAM, [{"n": str(i), "app": NAME} for i in range(count)])
    """
)

FAST_ENV = {
    "STREAMMACHINE_HEARTBEAT_SECONDS": "0.3",
    "STREAMMACHINE_INSTANCE_TTL": "2",
    "STREAMMACHINE_DASHBOARD_LOCK_TTL": "2",
    "STREAMMACHINE_BLOCK_MS": "100",
    "STREAMMACHINE_GRACE_SECONDS": "3",
}


def start_app(tmp_path, redis_url: str, name: str, *args: str, **env: str) -> Run:
    target = tmp_path / "demo_target.py"
    if not target.exists():
        target.write_text(TARGET)
    environment = dict(os.environ, REDIS_URL=redis_url, DEMO_APP=name, **FAST_ENV, **env)
    cmd = [sys.executable, "-m", "streammachine", "run", str(target), *args]
    return Run(cmd, environment, str(tmp_path), tmp_path / f"{name}.log")
