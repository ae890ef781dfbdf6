"""Shared fixtures: real servers started through streammachine.embedded, isolated env."""

from __future__ import annotations

import os

import pytest
import redis

from streammachine import App, ConsumerConfig, Storage
from streammachine.embedded import EmbeddedServer, stop_shared_server
from tests.helpers import wait_until  # noqa: F401  (re-exported for tests)

# Fast knobs so tests observe retries, claims and stops in well under a second.
FAST = ConsumerConfig(count=100, block_ms=100, retry_delay_ms=50, claim_idle_ms=1000, max_deliveries=3)


@pytest.fixture(autouse=True)
def isolated_env(tmp_path, monkeypatch):
    """No test sees the user's Redis settings or the per-user embedded server."""
    for name in list(os.environ):
        if name.startswith(("REDIS_", "STREAMMACHINE_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("STREAMMACHINE_HOME", str(tmp_path / "smhome"))
    yield
    Storage.reset_instance()
    stop_shared_server(tmp_path / "smhome")  # a test (or a CLI it ran) may have fallen back to the embedded server


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """One private valkey-server for the session (a fresh DB per test via `redis_url`)."""
    with EmbeddedServer(tmp_path_factory.mktemp("valkey")) as server:
        yield server


@pytest.fixture
def redis_url(redis_server):
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    return redis_server.url


@pytest.fixture
def private_server(tmp_path):
    """A server of this test's own, to kill, pause or restart."""
    server = EmbeddedServer(tmp_path / "private-valkey").start()
    yield server
    server.stop()


@pytest.fixture
def sync_redis(redis_url):
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


@pytest.fixture
async def app_factory(redis_url):
    """Build Apps on the test server with fast consumer knobs; all are shut down afterwards."""
    apps = []

    def make(name: str = "test", url: str | None = None, **kwargs) -> App:
        kwargs.setdefault("consumer_config", FAST)
        kwargs.setdefault("grace_seconds", 5)
        app = App(name, redis_url=url or redis_url, **kwargs)
        apps.append(app)
        return app

    yield make
    for app in apps:
        await app.shutdown()
