"""uvicorn on the caller's event loop: a task, not a thread or a process (a notebook kernel's loop too).

The socket is bound here, before uvicorn starts, so a port in use is an
``OSError`` for the caller (uvicorn would ``sys.exit`` inside the loop), and
uvicorn never installs signal handlers: the loop's owner (the headless
runner, the kernel) keeps its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from typing import Any, Iterator, Optional

import uvicorn

log = logging.getLogger("streammachine.dashboard")


class _QuietServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:  # the loop's owner handles signals, not us
        yield


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (IPv4 or IPv6 as the address says); OSError naming both."""
    try:
        family = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM)[0][0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
            sock.listen(128)
        except OSError:
            sock.close()
            raise
    except OSError as exc:
        raise OSError(f"the dashboard cannot listen on {host}:{port} ({exc.strerror or exc})") from None
    sock.set_inheritable(False)
    return sock


class Serving:
    """One running uvicorn server on this loop: ``await Serving.start(app, host, port)``, then ``stop()``."""

    def __init__(self, server: _QuietServer, task: asyncio.Task, sock: socket.socket) -> None:
        self.server, self.task, self.socket = server, task, sock
        self.stopping = asyncio.Event()  # SSE streams end when it is set, so shutdown need not wait for them

    @property
    def port(self) -> int:
        return self.socket.getsockname()[1]

    @classmethod
    async def start(cls, asgi: Any, host: str, port: int, *, startup_timeout: float = 10.0) -> Serving:
        sock = bind(host, port)
        config = uvicorn.Config(
            asgi,
            log_config=None,  # leave the process's logging alone
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=2,
            ws="none",
        )
        server = _QuietServer(config)
        task = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]), name="streammachine:dashboard")
        serving = cls(server, task, sock)
        deadline = asyncio.get_running_loop().time() + startup_timeout
        while not server.started:
            if task.done():
                sock.close()
                error: Optional[BaseException] = task.exception() if not task.cancelled() else None
                raise OSError(f"the dashboard server did not start: {error!r}")
            if asyncio.get_running_loop().time() > deadline:
                await serving.stop()
                raise OSError(f"the dashboard server did not start within {startup_timeout} s")
            await asyncio.sleep(0.01)
        return serving

    async def stop(self) -> None:
        self.stopping.set()
        self.server.should_exit = True
        try:
            await asyncio.wait_for(asyncio.shield(self.task), timeout=5)
        except asyncio.TimeoutError:
            self.task.cancel()
        except Exception as exc:
            log.debug("dashboard server ended with %r", exc)
        finally:
            self.socket.close()
