"""``Harness``: an App on a private embedded Valkey, to test a pipeline end to end with nothing faked.

::

    async with Harness(app) as h:                     # app (yours) now talks to a private server
        await h.send("orders", {"item": "book", "qty": 2})
        await h.drain()                               # every agent's group: all read, nothing pending
        assert (await h.messages("invoices"))[0].message["total"] == "25.0"

Real consumer groups, pending lists, XAUTOCLAIM and dead letters: the
server is a real ``valkey-server``. ``drain`` waits until each agent's
group has been handed every entry of its stream and has nothing pending
(retries and dead-lettering included), so what the handlers did is done.
The fault helpers (``kill_consumer``, ``restart_agent``, ``restart_server``,
``stalled``) act on this App and server. In pytest, the
``streammachine_harness`` fixture gives a started Harness (see plugin.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

from streammachine.app import App
from streammachine.config import ConsumerConfig, Settings
from streammachine.embedded import EmbeddedServer
from streammachine.engine.specs import AgentSpec
from streammachine.message import Message, message_from_entry
from streammachine.redis.entries import as_text, parse_stream_id
from streammachine.testkit import faults

# Knobs for tests: failures are retried and reclaimed in well under a second.
FAST = ConsumerConfig(count=100, block_ms=100, retry_delay_ms=50, claim_idle_ms=1000, max_deliveries=3)

Target = Union[None, str, Any, AgentSpec, App, Iterable[Any]]


class DrainTimeout(AssertionError):
    """``drain`` ran out of time: the message says which group still has what."""


class Harness:
    """An App on a private server (see the module doc).

    ``app``: yours (pointed at the server while the harness runs: it must not be
    running), or None for a fresh ``App("harness")`` with ``FAST`` consumer
    knobs, at ``harness.app``. ``server``: an ``EmbeddedServer`` to use (the
    pytest fixture shares one per session, flushed per test); by default the
    harness starts one of its own in a temporary directory and removes it after.
    """

    def __init__(self, app: Optional[App] = None, *, server: Optional[EmbeddedServer] = None) -> None:
        self.app = app if app is not None else App("harness", consumer_config=FAST, grace_seconds=5)
        self.server = server
        self._own_server = server is None
        self._tmp: Optional[str] = None
        self._started = False
        self._settings: Optional[Settings] = None  # the App's own, while the harness runs it without a registry entry

    @property
    def url(self) -> str:
        if self.server is None:
            raise RuntimeError("the harness has not started: `async with Harness(app) as h` or `await h.start()`")
        return self.server.url

    async def start(self, app: Optional[App] = None) -> Harness:
        """Start the server (if the harness owns one), point the App at it and start the App."""
        if app is not None:
            self.app = app
        if self.server is None:
            self._tmp = tempfile.mkdtemp(prefix="streammachine-harness-")
            self.server = await asyncio.to_thread(EmbeddedServer(Path(self._tmp)).start)
        self.app.use_server(self.server.url)
        # no instances-registry entry on a test's server: tests see only the keys their App writes
        self._settings, self.app.settings = (
            self.app.settings,
            dataclasses.replace(self.app.settings, heartbeat_seconds=0),
        )
        await self.app.startup()
        self._started = True
        return self

    async def stop(self) -> None:
        """Stop the App; stop and remove the harness's own server."""
        try:
            await self.app.shutdown()
        finally:
            if self._settings is not None:
                self.app.settings, self._settings = self._settings, None
            if self._own_server and self.server is not None:
                await asyncio.to_thread(self.server.stop)
                self.server = None
            if self._tmp is not None:
                shutil.rmtree(self._tmp, ignore_errors=True)
                self._tmp = None
            self._started = False

    async def __aenter__(self) -> Harness:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def client(self) -> Any:
        """The App's redis.asyncio client (on the private server); starts the harness on first use."""
        if not self._started:
            await self.start()
        return await self.app.redis.get_client()

    # -- data in and out -----------------------------------------------------

    async def send(self, stream: str, records: Any) -> Union[str, List[str]]:
        """One record (a dict or a model instance): its id. A list of records: their ids."""
        if not self._started:
            await self.start()
        if isinstance(records, (list, tuple)):
            return await self.app.send_batch(stream, list(records))
        return await self.app.send(stream, records)

    async def messages(self, stream: str, count: Optional[int] = None) -> List[Message]:
        """The stream's entries, oldest first, as Messages."""
        client = await self.client()
        entries = await client.xrange(stream, count=count)
        return [message_from_entry(stream, entry_id, fields, None) for entry_id, fields in entries]

    async def dead_letters(self, stream: str, agent: Optional[str] = None) -> List[Message]:
        """The dead-letter stream of ``stream`` (as the agent's config names it), as Messages."""
        spec = self._specs(agent)[0] if agent is not None else None
        config = spec.config if spec is not None else self.app.config.consumer
        return await self.messages(config.dead_letter_for(stream))

    # -- waiting ---------------------------------------------------------------

    def _specs(self, target: Target) -> List[AgentSpec]:
        agents = self.app.agents
        if target is None or target is self.app:
            return list(agents.values())
        if isinstance(target, AgentSpec):
            return [target]
        items: Sequence[Any] = list(target) if isinstance(target, (list, tuple, set)) else [target]
        chosen = []
        for item in items:
            if isinstance(item, AgentSpec):
                chosen.append(item)
                continue
            matches = [
                s
                for n, s in agents.items()
                if item is s.handler
                or (s.window is not None and item is s.window.callback)  # a window agent's function
                or item in (n, n.rsplit(".", 1)[-1])
            ]
            if len(matches) != 1:
                names = sorted(n.rsplit(".", 1)[-1] for n in agents)
                raise KeyError(f"no single agent {getattr(item, '__name__', item)!r} in app {self.app.name!r}: {names}")
            chosen.append(matches[0])
        return chosen

    async def backlog(self, target: Target = None) -> Dict[Tuple[str, str], dict]:
        """Per (stream, group) of the target agents: pending, last delivered id, the stream's last id."""
        client = await self.client()
        out: Dict[Tuple[str, str], dict] = {}
        for spec in self._specs(target):
            key = (spec.stream, spec.group)
            if key in out:
                continue
            try:
                info = await client.xinfo_stream(spec.stream)
                groups = await client.xinfo_groups(spec.stream)
            except Exception:  # no stream yet: nothing to wait for
                out[key] = {"pending": 0, "last_delivered_id": None, "last_id": None, "drained": True}
                continue
            last_entry = info.get("last-entry")
            last_id = as_text(last_entry[0]) if last_entry else None
            row = next((g for g in groups if as_text(g["name"]) == spec.group), None)
            delivered = as_text(row["last-delivered-id"]) if row else None
            pending = row["pending"] if row else None
            caught_up = last_id is None or (
                delivered is not None and parse_stream_id(delivered) >= parse_stream_id(last_id)
            )
            out[key] = {
                "pending": pending,
                "last_delivered_id": delivered,
                "last_id": last_id,
                "drained": row is not None and pending == 0 and caught_up,
            }
        return out

    async def drain(self, target: Target = None, timeout: float = 10.0, interval: float = 0.02) -> None:
        """Wait until every entry of the target agents' streams was handled (or dead-lettered) and acknowledged.

        ``target``: None or the App (all its agents), an agent (name, handler or spec), or a list of them.
        Raises ``DrainTimeout`` naming what is left after ``timeout`` seconds.
        """
        if not self._started:
            await self.start()
        if not self.app.is_running:
            raise RuntimeError(f"app {self.app.name!r} is {self.app.state}: drain needs it running")
        deadline = time.monotonic() + timeout
        while True:
            backlog = await self.backlog(target)
            if all(row["drained"] for row in backlog.values()):
                return
            if time.monotonic() > deadline:
                left = "; ".join(
                    f"{stream}/{group}: pending {row['pending']}, delivered up to {row['last_delivered_id']} "
                    f"of {row['last_id']}"
                    for (stream, group), row in backlog.items()
                    if not row["drained"]
                )
                raise DrainTimeout(f"not drained after {timeout}s: {left}")
            await asyncio.sleep(interval)

    # -- faults ----------------------------------------------------------------

    async def kill_consumer(self, agent: str, index: int = 0) -> Any:
        """Kill one consumer of ``agent`` as a crash would (see ``testkit.faults.kill_consumer``)."""
        return await faults.kill_consumer(self.app, agent, index)

    def restart_agent(self, agent: str) -> None:
        """New consumers for ``agent`` under the same names (they take back what the old ones left pending)."""
        faults.restart_agent(self.app, agent)

    async def restart_server(self, *, kill: bool = False) -> None:
        """Stop (or SIGKILL) the server and start it again: same port, same data (AOF)."""
        await faults.restart_server(self._server(), kill=kill)

    def stalled(self) -> contextlib.AbstractAsyncContextManager:
        """``async with h.stalled(): ...``: the server frozen (SIGSTOP) inside the block."""
        return faults.stalled(self._server())

    async def stall_server(self, seconds: float) -> None:
        await faults.stall_server(self._server(), seconds)

    def _server(self) -> EmbeddedServer:
        if self.server is None:
            raise RuntimeError("the harness has no server yet: start it first")
        return self.server
