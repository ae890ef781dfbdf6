"""Apps as real `streammachine run` processes, for the dashboard's failover and browser tests."""

from __future__ import annotations

import os
import sys
import textwrap

from tests.headless.test_cli_run import Run

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


# Poison entries fail until the "fixed" key exists (a fix deployed while they wait in the dead-letter stream).
DLQ_TARGET = textwrap.dedent(
    """\
    from streammachine import App

    app = App("payments")


    @app.agent("payments", group="ledger", on_error="dead_letter", block_ms=100)
    async def pay(msg):
        client = await app.redis.get_client()
        if msg.message.get("poison") and not await client.exists("fixed"):
            raise ValueError("cannot parse amount")
        await client.rpush("handled", msg.message["n"])
    """
)


def start_dlq_app(tmp_path, redis_url: str, port: int, token: str) -> Run:
    target = tmp_path / "dlq_target.py"
    target.write_text(DLQ_TARGET)
    env = dict(os.environ, REDIS_URL=redis_url, STREAMMACHINE_DASHBOARD_TOKEN=token, **FAST_ENV)
    cmd = [sys.executable, "-m", "streammachine", "run", str(target), "--dashboard-port", str(port)]
    return Run(cmd, env, str(tmp_path), tmp_path / "payments.log")
