"""The embedded default and the private-server helper."""

import stat

import pytest
import redis
from helpers import port_is_free, wait_until

from streammachine import App
from streammachine._redact import redact_url
from streammachine.config import Settings
from streammachine.embedded import (
    EmbeddedServer,
    read_runtime_file,
    shared_server_status,
    shared_server_url,
    stop_shared_server,
)


@pytest.fixture
def home(tmp_path):
    yield tmp_path / "home"
    stop_shared_server(tmp_path / "home")


@pytest.mark.skipif(not port_is_free(6379), reason="something listens on localhost:6379, so no fallback happens")
async def test_app_with_nothing_configured_uses_the_embedded_server(home, monkeypatch, caplog):
    monkeypatch.setenv("STREAMMACHINE_HOME", str(home))
    app = App("embedded")
    got = []

    @app.agent("e", group="g", block_ms=100)
    async def handle(record):
        got.append(record.message)

    await app.startup()
    try:
        await app.send("e", {"hello": "world"})
        await wait_until(lambda: got == [{"hello": "world"}])
        info = read_runtime_file(home)
        assert app.redis.url == info["url"]
        runtime = home / "embedded" / "server.json"
        assert stat.S_IMODE(runtime.stat().st_mode) == 0o600
        assert "embedded Valkey server" in caplog.text and info["url"] not in caplog.text  # password redacted
        assert (home / "embedded" / "appendonlydir").exists()  # AOF on
    finally:
        await app.shutdown()
    # a second process/App attaches to the same server instead of starting another
    assert shared_server_url(home) == info["url"]
    assert shared_server_status(home)["running"]


@pytest.mark.skipif(not port_is_free(6379), reason="something listens on localhost:6379")
async def test_embedded_off_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("STREAMMACHINE_EMBEDDED", "0")
    app = App("off")
    with pytest.raises(ConnectionError, match="STREAMMACHINE_EMBEDDED=0"):
        await app.startup()


def test_configured_url_never_falls_back(monkeypatch, home):
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")
    settings = Settings.from_env()
    assert settings.redis_configured
    app = App("x", settings=settings)
    assert app.redis.url == "redis://127.0.0.1:1/0"
    assert read_runtime_file(home) is None


def test_shared_server_keeps_data_across_restart(home):
    url = shared_server_url(home)
    client = redis.Redis.from_url(url)
    client.xadd("kept", {"a": 1})
    client.close()
    assert stop_shared_server(home)
    url2 = shared_server_url(home)
    client = redis.Redis.from_url(url2)
    assert client.xlen("kept") == 1  # the AOF replayed
    client.close()


def test_private_server_lifecycle(tmp_path):
    server = EmbeddedServer(tmp_path / "s").start()
    client = redis.Redis.from_url(server.url)
    assert client.ping()
    server.kill()
    assert not server.is_running()
    server.start()
    assert client.ping()
    client.close()
    server.stop()


def test_redact_url_hides_passwords():
    assert redact_url("redis://:s3cret@h:1/0") == "redis://:***@h:1" + "/0"
    assert redact_url("rediss://user:s3cret@h:1/0") == "rediss://user:***@h:1/0"
    assert redact_url("redis://h:1/0") == "redis://h:1/0"
