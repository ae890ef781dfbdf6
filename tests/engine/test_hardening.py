"""Operator-facing hardening (issue 11): bad Redis URLs, client socket settings, weak settings warned about."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading

import pytest
import redis.exceptions

from streammachine import App, RedisConnection
from streammachine.config import BadRedisURL, ConfigError, Settings
from streammachine.redis.connection import CLIENT_DEFAULTS

SECRET = "s3cretpw"
APP = """
from streammachine import App
app = App("bad-url"{extra})

@app.agent("s")
async def handle(message):
    pass
"""


def run_cli(tmp_path, *argv, env=None, app_extra=""):
    target = tmp_path / "app.py"
    target.write_text(APP.format(extra=app_extra))
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "STREAMMACHINE_"))}
    environ.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "streammachine", *[str(target) if a == "APP" else a for a in argv]],
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    "url, reason",
    [
        (f"redis://:{SECRET}@localhost:notaport/0", "Port could not be cast"),
        (f"http://:{SECRET}@localhost:6379/0", "expected a redis://"),
        (f"redis://:{SECRET}@localhost:6379/db1", "database 'db1'"),
        (f"redis://:{SECRET}@localhost:70000/0", "Port out of range"),
    ],
)
@pytest.mark.parametrize("how", ["REDIS_URL", "--redis-url", "App(redis_url=...)"])
def test_an_unparseable_redis_url_exits_2_naming_it_redacted(tmp_path, url, reason, how):
    """Issue 11 item 20: not a 48-line traceback and exit 1, but exit 2 and one line with the URL, password hidden."""
    if how == "REDIS_URL":
        done = run_cli(tmp_path, "run", "APP", env={"REDIS_URL": url})
    elif how == "--redis-url":
        done = run_cli(tmp_path, "--redis-url", url, "run", "APP")
    else:
        done = run_cli(tmp_path, "run", "APP", app_extra=f", redis_url={url!r}", env={"STREAMMACHINE_EMBEDDED": "0"})
    assert done.returncode == 2, done.stderr
    assert "bad Redis URL" in done.stderr and reason in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and SECRET not in done.stderr + done.stdout
    assert url.split(SECRET)[0] + "***@localhost" in done.stderr


def test_bad_url_errors_in_the_library():
    with pytest.raises(BadRedisURL, match=r"REDIS_URL: bad Redis URL redis://:\*\*\*@h:x/0"):
        Settings.from_env({"REDIS_URL": f"redis://:{SECRET}@h:x/0"})
    assert issubclass(BadRedisURL, ConfigError)


async def test_app_startup_with_a_bad_url_raises_it_clearly():
    app = App("bad", redis_url=f"redis://:{SECRET}@h/notadb")
    with pytest.raises(BadRedisURL, match="database 'notadb'") as raised:
        await app.startup()
    assert SECRET not in str(raised.value)


def _socket_of(client) -> socket.socket:
    connection = client.connection_pool._available_connections[0]
    return connection._writer.get_extra_info("socket")


async def test_client_sockets_have_explicit_timeouts_and_keepalive(redis_url):
    """Issue 11 item 20: set by StreamMachine, whatever redis-py's defaults (5.x has no timeouts, no keepalive)."""
    async with RedisConnection(url=redis_url) as connection:
        client = await connection.get_client()
        await client.ping()
        sock = _socket_of(client)
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        for name, value in CLIENT_DEFAULTS["socket_keepalive_options"].items():
            assert sock.getsockopt(socket.IPPROTO_TCP, name) == value
        kwargs = client.connection_pool.connection_kwargs
        assert (kwargs["socket_timeout"], kwargs["socket_connect_timeout"]) == (10.0, 5.0)


@pytest.fixture
def black_hole():
    """A TCP server that accepts connections and never answers (a stalled proxy, a half-dead host)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held, stop = [], threading.Event()

    def accept():
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()


async def test_a_send_to_a_server_that_never_answers_fails_instead_of_hanging(black_hole):
    async with RedisConnection(url=f"redis://127.0.0.1:{black_hole}/0") as connection:
        with pytest.raises((redis.exceptions.TimeoutError, asyncio.TimeoutError)):
            # the outer bound only keeps a regression from hanging the suite; the client's own timeout fires first
            await asyncio.wait_for(connection.xadd("s", {"a": 1}), timeout=CLIENT_DEFAULTS["socket_timeout"] + 20)


def _run_until_ready_then_stop(tmp_path, url, *args, **env):
    target = tmp_path / "ready_app.py"
    target.write_text(APP.format(extra="") + "\n@app.on_startup\nasync def ready():\n    print('READY', flush=True)\n")
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "STREAMMACHINE_"))}
    environ.update(REDIS_URL=url, STREAMMACHINE_HOME=os.environ["STREAMMACHINE_HOME"], **env)
    proc = subprocess.Popen(
        [sys.executable, "-m", "streammachine", "run", str(target), *args],
        env=environ,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert "READY" in proc.stdout.readline()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.stderr.read()


def test_weak_settings_are_warned_about(redis_url, tmp_path):
    """Issue 11 item 18: a short STREAMMACHINE_SECRET_KEY and a metrics endpoint open to other hosts get a WARNING
    (the key itself never printed); the defaults and a proper key get none."""
    weak_key = "hunter2"
    err = _run_until_ready_then_stop(
        tmp_path,
        redis_url,
        "--metrics-port",
        "0",
        "--metrics-host",
        "0.0.0.0",
        STREAMMACHINE_SECRET_KEY=weak_key,
    )
    assert "WARNING" in err and "STREAMMACHINE_SECRET_KEY is 7 characters" in err, err
    assert "--metrics-host 0.0.0.0 is reachable from other hosts" in err, err
    assert weak_key not in err
    err = _run_until_ready_then_stop(
        tmp_path, redis_url, "--metrics-port", "0", STREAMMACHINE_SECRET_KEY=secrets.token_hex(32)
    )
    assert "STREAMMACHINE_SECRET_KEY" not in err and "reachable from other hosts" not in err, err
