"""The embedded default and the private-server helper."""

import socket
import stat

import pytest
import redis
from redis.cluster import RedisCluster

from streammachine import App
from streammachine._redact import redact_url
from streammachine.config import Settings
from streammachine.embedded import (
    EmbeddedServer,
    EmbeddedServerError,
    free_port,
    read_runtime_file,
    shared_server_status,
    shared_server_url,
    stop_shared_server,
)
from streammachine.testing import LocalCluster
from tests.helpers import port_is_free, wait_until, wait_until_sync


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


def _occupy(port: int) -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", port))
    sock.listen()
    return sock


def test_a_first_start_picks_another_port_when_its_own_was_taken(tmp_path):
    """CI failed when a port picked free was taken before the server bound it; now a first start tries again."""
    server = EmbeddedServer(tmp_path / "s")
    taken = server.port
    with _occupy(taken):
        server.start()
        try:
            assert server.port != taken and redis.Redis.from_url(server.url).ping()
            server.stop()
            with _occupy(server.port):  # a restart keeps its port (its clients know it): a clear error
                with pytest.raises(EmbeddedServerError, match="Address already in use"):
                    server.start()
        finally:
            server.stop()


def test_a_port_given_is_never_changed(tmp_path):
    with _occupy(free_port()) as sock:
        port = sock.getsockname()[1]
        with pytest.raises(EmbeddedServerError, match="Address already in use"):
            EmbeddedServer(tmp_path / "s", port=port).start()


def test_a_cluster_node_picks_another_bus_port_when_its_own_was_taken(tmp_path):
    cluster = LocalCluster(tmp_path / "cluster", masters=3)
    taken = cluster.nodes[1].bus_port
    with _occupy(taken):
        with cluster:
            assert cluster.nodes[1].bus_port != taken
            client = RedisCluster.from_url(cluster.nodes[0].url)
            client.set("k", "v")
            assert client.get("k") == b"v"
            client.close()


def test_redact_url_hides_passwords():
    assert redact_url("redis://:s3cret@h:1/0") == "redis://:***@h:1" + "/0"
    assert redact_url("rediss://user:s3cret@h:1/0") == "rediss://user:***@h:1/0"
    assert redact_url("redis://h:1/0") == "redis://h:1/0"


def _argv_recorder(tmp_path, log):
    """A stand-in server binary that records the argv it was given (what `ps` shows) and runs the real one."""
    from streammachine.embedded import find_server_binary

    wrapper = tmp_path / "valkey-server"
    wrapper.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" >> {log}\nexec {find_server_binary()} "$@"\n')
    wrapper.chmod(0o755)
    return str(wrapper)


@pytest.mark.parametrize("password", [None, 'with "quotes", spaces and \\ a backslash'])
def test_the_password_is_never_on_the_server_command_line(tmp_path, password):
    """Issue 11 item 16: argv is world-readable (`ps`); the password goes to the server on its stdin."""
    log = tmp_path / "argv.log"
    server = EmbeddedServer(tmp_path / "data", password=password, binary=_argv_recorder(tmp_path, log)).start()
    try:
        argv = log.read_text()
        assert server.password not in argv and "requirepass" not in argv
        assert server.password not in " ".join(server.command(daemonize=True))
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=server.port).ping()
        client = redis.Redis.from_url(server.url)
        assert client.ping()  # the password it was given is the one it asks for
        client.close()
    finally:
        server.stop()


def test_a_loose_data_dir_is_tightened(home, caplog):
    """Issue 11 item 18: an embedded/ dir made earlier with mode 0755 (and a runtime file with 0644) would leave
    the AOF and the password readable by other users: both are made private when the server starts."""
    directory = home / "embedded"
    directory.mkdir(parents=True, mode=0o755)
    directory.chmod(0o755)
    (directory / "server.json").write_text("{}")
    (directory / "server.json").chmod(0o644)
    shared_server_url(home)
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert stat.S_IMODE((directory / "server.json").stat().st_mode) == 0o600
    assert "had mode 755" in caplog.text


def test_a_restart_keeps_the_port_and_password(home):
    """Issue 11 item 3: after a crash or a stop, the server comes back at the URL running apps know."""
    import os
    import signal

    from streammachine.embedded import start_shared_server

    url, started = start_shared_server(home)
    assert started and start_shared_server(home) == (url, False)
    client = redis.Redis.from_url(url)
    client.config_set("appendfsync", "always")
    client.xadd("kept", {"a": 1})
    os.kill(read_runtime_file(home)["pid"], signal.SIGKILL)
    wait_until_sync(lambda: not shared_server_status(home)["running"], what="the server gone")
    assert shared_server_url(home) == url
    assert client.xlen("kept") == 1  # the same client reconnects: same port, same password, AOF replayed
    assert stop_shared_server(home) and read_runtime_file(home)["stopped"]
    assert shared_server_url(home) == url
    client.close()


def test_the_owner_restarts_a_dead_server_but_not_a_stopped_one(home):
    import os
    import signal

    from streammachine.embedded import recover_shared_server

    url = shared_server_url(home)  # this process starts it: it owns it
    assert recover_shared_server(home, url) is None  # alive: nothing to do
    pid = read_runtime_file(home)["pid"]
    os.kill(pid, signal.SIGKILL)
    wait_until_sync(lambda: not shared_server_status(home)["running"], what="the server gone")
    assert recover_shared_server(home, url) is None  # started again at the same URL
    assert shared_server_status(home)["running"] and read_runtime_file(home)["pid"] != pid
    stop_shared_server(home)
    assert recover_shared_server(home, url) is None
    assert not shared_server_status(home)["running"], "a server stopped on purpose stays stopped"
