"""The per-user shared server: what ``App()`` uses when no Redis is configured.

``shared_server_url()`` starts (or attaches to) a daemonised ``EmbeddedServer``
whose data lives in the StreamMachine home with AOF on, and whose URL is kept
in a 0600 runtime file so workers, the CLI, the MCP server and other kernels
all find the same server. ``default_url()`` decides when that fallback
happens at all.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import signal
import socket
import stat
import subprocess
import time
from pathlib import Path
from typing import Optional, Tuple
from urllib.parse import urlsplit

from streammachine._redact import redact_url
from streammachine.embedded.server import EmbeddedServer, EmbeddedServerError, _ping

log = logging.getLogger("streammachine.embedded")

RUNTIME_FILE = "server.json"

# --- the per-user shared server ---------------------------------------------
#
# Its runtime file (0600, in a 0700 directory) holds the URL, the pid, and the pid of the process that started it
# (its owner: a notebook kernel, an app). The URL outlives the server: `streammachine server start` and a restart
# after a crash reuse its port and password, so running apps reconnect to the same URL. `server stop` marks the
# file stopped, so nobody brings the server back behind the user's back.


def _server_dir(home: Path) -> Path:
    return home / "embedded"


def read_runtime_file(home: Path) -> Optional[dict]:
    try:
        info = json.loads((_server_dir(home) / RUNTIME_FILE).read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) and isinstance(info.get("url"), str) else None


def _write_runtime_file(directory: Path, info: dict) -> None:
    """Atomically, mode 0600 (a new file each time: an older, looser mode is not kept)."""
    temporary = directory / f".{RUNTIME_FILE}.{os.getpid()}"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(info, fh)
    os.replace(temporary, directory / RUNTIME_FILE)


def url_address(url: str) -> Tuple[str, Optional[int], Optional[str]]:
    """(host, port, password) of a server URL; port None when it does not parse."""
    try:
        parts = urlsplit(url)
        return parts.hostname or "127.0.0.1", parts.port, parts.password
    except ValueError:
        return "127.0.0.1", None, None


def _alive(info: dict) -> bool:
    host, port, password = url_address(info.get("url", ""))
    return port is not None and _ping(host, port, password)


def _port_free(port: int) -> bool:
    """Whether a server could listen on ``port`` now (SO_REUSEADDR, as the server binds: TIME_WAIT is no obstacle)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _process_gone(info: dict) -> bool:
    """Whether the server of ``info`` has certainly exited: a silent server that still runs is stalled, not dead."""
    pid = info.get("pid")
    if not pid:
        port = url_address(info.get("url", ""))[1]
        return port is not None and _port_free(port)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # someone else's process now has that pid
        return True
    try:
        name = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False  # no /proc: a live pid is taken for the server
    return b"valkey" not in name and b"redis" not in name  # the pid was reused


def _make_private(directory: Path) -> None:
    """The data dir (AOF, runtime file with the password) readable by this user only, also when it already existed."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    mode = stat.S_IMODE(directory.stat().st_mode)
    if mode & 0o077:
        directory.chmod(0o700)
        log.warning(
            "StreamMachine: %s had mode %o (others could read the server's data); set it to 700", directory, mode
        )


def _start_locked(directory: Path, previous: Optional[dict], owner_pid: Optional[int]) -> dict:
    """Start the server (the lock is held), on the previous port and password when there were some."""
    port = password = None
    if previous:
        _, port, password = url_address(previous["url"])
        if port and not _port_free(port):
            log.warning(
                "StreamMachine: port %d of the embedded server is taken by another program; using a new port "
                "(apps on this machine find it in %s)",
                port,
                directory / RUNTIME_FILE,
            )
            port = None
    server = EmbeddedServer(directory, port=port, password=password)
    started = subprocess.run(
        server.command(daemonize=True), input=server.config_text(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    if started.returncode != 0:
        logfile = directory / "server.log"
        tail = logfile.read_text(errors="replace")[-2000:] if logfile.exists() else ""
        raise EmbeddedServerError(
            f"valkey-server exited with {started.returncode}: {started.stderr.decode(errors='replace')}{tail}"
        )
    server.wait_ready()
    pid_file = directory / "server.pid"
    info = {
        "url": server.url,
        "pid": int(pid_file.read_text().strip()) if pid_file.exists() else None,
        "owner_pid": owner_pid,
        "data_dir": str(directory),
        "binary": server.binary,
        "started": time.time(),
    }
    _write_runtime_file(directory, info)
    return info


def start_shared_server(home: Path) -> Tuple[str, bool]:
    """(URL of the per-user server, whether this call started it): attach to it, or start it if none is alive.

    A file lock serialises concurrent starters (two kernels, N workers).
    """
    directory = _server_dir(home)
    _make_private(directory)
    with open(directory / "server.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        info = read_runtime_file(home)
        if info and _alive(info):
            log.debug("StreamMachine: using the embedded Valkey server at %s", redact_url(info["url"]))
            return info["url"], False
        started = _start_locked(directory, info, os.getpid())
        log.warning(
            "StreamMachine: no Redis configured and none on localhost:6379; started the embedded "
            "Valkey server at %s (data: %s). Set REDIS_URL to use your own server.",
            redact_url(started["url"]),
            directory,
        )
        return started["url"], True


def shared_server_url(home: Path) -> str:
    """Attach to the per-user server, starting it first if none is alive (see ``start_shared_server``)."""
    return start_shared_server(home)[0]


def recover_shared_server(home: Path, url: str) -> Optional[str]:
    """For a process whose server at ``url`` (the shared one) stopped answering: the URL to use from now on.

    The runtime file's URL when the server was started elsewhere meanwhile; else,
    when this process started the server (owns it), it died (its process is
    gone, not stalled) and nobody stopped it on purpose, it is started again
    on the same port and password. None: nothing to change (keep retrying ``url``).
    """
    info = read_runtime_file(home)
    if info is None or info["url"] != url:
        return None if info is None else info["url"]
    if info.get("stopped") or info.get("owner_pid") != os.getpid() or _alive(info) or not _process_gone(info):
        return None
    directory = _server_dir(home)
    with open(directory / "server.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        info = read_runtime_file(home)  # again, under the lock: another process may have acted
        if info is None or info["url"] != url:
            return None if info is None else info["url"]
        if info.get("stopped") or _alive(info) or not _process_gone(info):
            return None
        started = _start_locked(directory, info, info.get("owner_pid"))
    log.warning(
        "StreamMachine: the embedded Valkey server (pid %s) had died; started it again at %s (data: %s)",
        info.get("pid"),
        redact_url(started["url"]),
        directory,
    )
    return None if started["url"] == url else started["url"]


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
    """Stop the per-user server; True when one was running. Its URL is kept for the next start."""
    info = read_runtime_file(home)
    if not info:
        return False
    running = bool(info.get("pid")) and _alive(info)
    if running:
        os.kill(info["pid"], signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _alive(info) and time.monotonic() < deadline:
            time.sleep(0.05)
    if not info.get("stopped"):
        _write_runtime_file(_server_dir(home), {**info, "stopped": True, "pid": None})
    return running


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
