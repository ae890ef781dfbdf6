"""Fault helpers for tests of pipelines: kill a consumer, restart or stall the server, count what was handled.

``Ledger`` and ``Producer`` are what StreamMachine's own fault suite counts
with (tests/faults/): a handler records each sequence number it handled in
a ``Ledger`` (an append-only file, so a record survives a SIGKILL of its
writer), a ``Producer`` sends numbered records and remembers which ones
Redis confirmed. Then "nothing lost" is ``producer.confirmed <= set(ledger.counts())``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any, AsyncIterator, Optional

from redis.exceptions import RedisError

from streammachine.app import App
from streammachine.embedded import EmbeddedServer


class Ledger:
    """Append-only record of handled sequence numbers, safe across forks and SIGKILL."""

    def __init__(self, path: os.PathLike | str) -> None:
        self.path = Path(path)
        self.path.touch()
        self._fd: Optional[int] = None
        self._pid: Optional[int] = None

    def record(self, seq: Any) -> None:
        if self._pid != os.getpid():  # first use in this (possibly forked) process
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            self._pid = os.getpid()
        assert self._fd is not None
        os.write(self._fd, (seq if isinstance(seq, bytes) else str(seq).encode()) + b"\n")

    def counts(self) -> Counter:
        return Counter(int(line) for line in self.path.read_bytes().split() if line)

    def unique(self) -> int:
        return len(self.counts())


def seq_of(message: Any) -> int:
    """The ``seq`` field of a Message a ``Producer`` sent."""
    return int(message.fields[b"seq"])


class Producer:
    """Sends ``{"seq": i}`` records in small batches through ``App.send_batch``, retrying through outages.

    ``confirmed``: seqs whose XADD returned. ``ambiguous``: records of a
    batch that failed (some may have reached the stream, and are sent again).
    """

    def __init__(self, app: App, stream: str, *, batch: int = 20, interval: float = 0.01, pad: int = 32) -> None:
        self.app, self.stream, self.batch, self.interval = app, stream, batch, interval
        self.pad = "x" * pad
        self.confirmed: set = set()
        self.ambiguous = 0
        self.failures = 0
        self.next_seq = 0

    async def send(self, n: int, deadline: float = 60.0) -> None:
        stop_at = time.monotonic() + deadline
        end = self.next_seq + n
        while self.next_seq < end:
            seqs = list(range(self.next_seq, min(end, self.next_seq + self.batch)))
            records = [{"seq": s, "pad": self.pad} for s in seqs]
            while True:
                try:
                    await self.app.send_batch(self.stream, records)
                    break
                except (RedisError, OSError) as exc:
                    self.failures += 1
                    self.ambiguous += len(seqs)
                    if time.monotonic() > stop_at:
                        raise AssertionError(f"producer could not send for {deadline}s: {exc!r}") from exc
                    await asyncio.sleep(0.05)
            self.confirmed.update(seqs)
            self.next_seq = seqs[-1] + 1
            if self.interval:
                await asyncio.sleep(self.interval)


def _runner(app: App, agent: str) -> Any:
    """The running runner of an agent (the App keeps them private: tests reach in here, in one place)."""
    name = app._resolve_name(agent)
    runner = app._runners.get(name)
    if runner is None:
        raise RuntimeError(f"agent {name!r} is not running (start the app first)")
    return runner


async def kill_consumer(app: App, agent: str, index: int = 0) -> Any:
    """Kill one consumer of ``agent`` as a crash would; returns what was killed (a task or a pid).

    ``processes=N`` agents: SIGKILL of worker ``index`` (the supervisor restarts it under the same
    names, and it takes back its pending entries). In-process agents: the consumer task is cancelled
    mid-entry; the entry in hand stays pending until another consumer reclaims it (``claim_idle_ms``)
    or ``restart_agent`` starts new consumers under the same names.
    """
    runner = _runner(app, agent)
    pids = getattr(runner, "pids", None)
    if pids is not None:
        pid = pids[index]
        os.kill(pid, signal.SIGKILL)
        return pid
    consumer = runner.consumers[index]
    task = consumer.task
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
    return task


def restart_agent(app: App, agent: str) -> None:
    """Register the agent again as it is: new consumers under the same names take over (a hot swap)."""
    spec = app.agents[app._resolve_name(agent)]
    if spec.window is not None:  # a window agent: registered again from its window and function (same table)
        stage = spec.window
        app.agent(
            spec.stream, spec.group, spec.concurrency, spec.processes, name=spec.name, config=spec.config,
            output=spec.output, tables=[t for t in spec.tables if t is not stage.table], window=stage.window,
            wall_clock=spec.periodic[0] if spec.periodic else None,
        )(stage.callback)  # fmt: skip
        return
    app.agent(
        spec.stream,
        spec.group,
        spec.concurrency,
        spec.processes,
        batch=spec.batch,
        name=spec.name,
        config=spec.config,
        threaded=spec.threaded,
    )(spec.handler)


async def restart_server(server: EmbeddedServer, *, kill: bool = False) -> None:
    """Stop (SIGTERM, or SIGKILL with ``kill=True``) and start again on the same port and data (AOF)."""
    if kill:
        await asyncio.to_thread(server.kill)
    else:
        await asyncio.to_thread(server.stop)
    await asyncio.to_thread(server.start)


@contextlib.asynccontextmanager
async def stalled(server: EmbeddedServer) -> AsyncIterator[None]:
    """The server frozen (SIGSTOP) inside the block, as a network stall; it resumes on the way out."""
    server.pause()
    try:
        yield
    finally:
        server.resume()


async def stall_server(server: EmbeddedServer, seconds: float) -> None:
    """Freeze the server for ``seconds``, then let it go on."""
    async with stalled(server):
        await asyncio.sleep(seconds)
