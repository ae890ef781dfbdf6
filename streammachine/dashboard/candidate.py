"""A dashboard candidate: runs for the dashboard of its Redis, and serves it while elected.

Every App with ``dashboard_enabled`` (each worker of ``streammachine run
--dashboard-port N`` too) and every ``streammachine dashboard`` process is a
candidate; ``election.py`` makes exactly one of them serve. The one serving
shows the whole deployment (every instance in the registry), not only its
own App. A candidate that cannot bind its port gives the lock back and
waits a TTL before trying again, so another candidate can serve.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from typing import Any, Callable, Optional

from streammachine.dashboard import check_bind, require_extra
from streammachine.dashboard.election import Election

log = logging.getLogger("streammachine.dashboard")


class DashboardCandidate:
    """``start()`` campaigns in a task on the running loop; ``stop()`` stops serving and gives the lock back.

    ``connection``: a ``RedisConnection``; ``local_status``: the App's ``status`` coroutine function
    (its readiness is the dashboard's ``/readyz``), None for a standalone dashboard.
    """

    def __init__(
        self,
        connection: Any,
        *,
        host: str,
        port: int,
        token: Optional[str],
        lock_ttl: float,
        instance_id: Optional[str] = None,
        local_status: Optional[Callable[[], Any]] = None,
    ) -> None:
        require_extra()
        check_bind(host, token)
        self.connection, self.host, self.port, self.token = connection, host, port, token
        self.lock_ttl, self.local_status = lock_ttl, local_status
        self.instance_id = instance_id or f"dashboard@{socket.gethostname()}:{os.getpid()}"
        self.serving: Any = None  # server.Serving while elected
        self._election: Optional[Election] = None
        self._task: Optional[asyncio.Task] = None
        self._stopping = False
        self.terms = 0  # how many times this candidate was elected

    @classmethod
    def for_app(cls, app: Any) -> DashboardCandidate:
        settings = app.settings
        return cls(
            app.redis,
            host=settings.dashboard_host,
            port=app.dashboard_port,
            token=settings.dashboard_token,
            lock_ttl=settings.dashboard_lock_ttl,
            instance_id=app.instance.id if app.instance is not None else None,
            local_status=app.status,
        )

    @property
    def url(self) -> Optional[str]:
        if self.serving is None:
            return None
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.serving.port}/"

    async def start(self) -> None:
        self._stopping = False
        self._task = asyncio.get_running_loop().create_task(self._campaign(), name="streammachine:dashboard-election")

    async def stop(self) -> None:
        task, self._task = self._task, None
        self._stopping = True  # ends the campaign even when a cancellation is swallowed inside a Redis call
        if task is not None:
            task.cancel()
            await asyncio.wait([task], timeout=5)
        await self._step_down()
        if self._election is not None:
            try:
                await asyncio.wait_for(self._election.release(), timeout=2)
            except Exception as exc:  # the lock then expires on its own within its TTL
                log.debug("dashboard lock not released: %s", exc)

    async def _campaign(self) -> None:
        owner = {"instance": self.instance_id, "host": socket.gethostname(), "pid": os.getpid(), "port": self.port}
        while not self._stopping:
            pause = min(1.0, self.lock_ttl / 5)
            try:
                client = await self.connection.get_client()
                if self._election is None:
                    self._election = Election(client, self.lock_ttl, owner)
                election = self._election
                election.follow(client)
                if self.serving is None:
                    if await election.try_acquire():
                        if self._stopping:  # stop() ran meanwhile: give it back, never serve after stop
                            await election.release()
                            return
                        pause = await self._take_office(election)
                elif await election.renew():
                    pause = self.lock_ttl / 3
                else:
                    log.warning("dashboard: the lock is no longer ours (expired); stopping serving")
                    await self._step_down()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.debug("dashboard election: %s: %s", type(exc).__name__, exc)
                if self.serving is not None and not (self._election and self._election.lease_valid()):
                    log.warning("dashboard: cannot renew the lock (%s); stopping serving", exc)
                    await self._step_down()
            await asyncio.sleep(pause)

    async def _take_office(self, election: Election) -> float:
        """Elected: serve. Returns how long to wait before the next renewal (or, on failure, attempt)."""
        from streammachine.dashboard.api import build
        from streammachine.dashboard.server import Serving

        stopping = asyncio.Event()
        asgi = build(self, stopping)
        try:
            self.serving = await Serving.start(asgi, self.host, self.port)
        except OSError as exc:
            log.error("dashboard: elected, but %s; giving the lock back", exc)
            await election.release()
            return self.lock_ttl
        self.serving.stopping = stopping
        self.terms += 1
        election.owner["port"] = self.serving.port
        log.info("dashboard: serving on %s (elected for this Redis)", self.url)
        return self.lock_ttl / 3

    async def _step_down(self) -> None:
        serving, self.serving = self.serving, None
        if serving is not None:
            await serving.stop()
            log.info("dashboard: stopped serving")
