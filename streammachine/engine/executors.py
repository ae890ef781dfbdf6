"""Running one agent: N consumer tasks in this process, or N worker processes.

Worker processes are forked (so handlers defined in a notebook or a script's
``__main__`` work as they are), each runs its own event loop with
``concurrency`` consumers, and a supervisor restarts any that die under the
same consumer names, so they take back their own pending entries.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
import time
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any, Optional

from streammachine.engine.consumer import StreamConsumer
from streammachine.engine.specs import AgentSpec, AgentStats, consumer_base  # noqa: F401  (consumer_base: re-exported)
from streammachine.engine.stage import StageConsumer
from streammachine.redis.catalog import publish_agent
from streammachine.redis.connection import RedisConnection, ensure_group, make_client

log = logging.getLogger("streammachine.engine.executors")

# What a worker process publishes for its parent (AgentStats fields).
_SHARED_FIELDS = (
    "processed",
    "failed",
    "dead_lettered",
    "retried",
    "skipped",
    "reconnects",
    "commit_retries",
    "handler_seconds",
)


def consumer_client_options(spec: AgentSpec) -> dict:
    """A read timeout above the BLOCK time: redis-py's default (5 s) would fail every longer blocking read,
    while no timeout at all would hang forever on a half-open connection."""
    return {"socket_timeout": spec.config.block_ms / 1000 + 10}


def consumer_name(base: str, spec: AgentSpec, slot: str) -> str:
    return f"{base}:{spec.name.rsplit('.', 1)[-1]}:{slot}"


async def stop_consumers(consumers: list, grace: float, finish_read: bool = True) -> None:
    """Stop reading, let the handlers of the read in hand finish within ``grace`` seconds, then cancel."""
    for consumer in consumers:
        consumer.stop(finish_read)
    tasks = [c.task for c in consumers if c.task is not None]
    if not tasks:
        return
    _, pending = await asyncio.wait(tasks, timeout=grace)
    for task in pending:
        log.warning("consumer %s did not finish within %.1fs grace; cancelling", task.get_name(), grace)
        task.cancel()
    if pending:
        await asyncio.wait(pending, timeout=5)


async def prepare(spec: AgentSpec, connection: RedisConnection) -> None:
    """Create the group before start() returns, so what is sent next is not missed under start id "$";
    load a stage's tables not loaded yet, so its handlers see committed state from the first entry."""
    client = await connection.get_client()
    await ensure_group(client, spec.stream, spec.group, spec.config.start_id)
    await publish_agent(client, spec)  # typed messages (#15): the stream catalog lists the agent's model
    await load_tables(spec, client, only_new=True)


async def load_tables(spec: AgentSpec, client: Any, *, only_new: bool = False) -> None:
    for table in spec.tables:
        if not (only_new and table.loaded):
            await table.load(client)


def make_consumer(
    client: Any, spec: AgentSpec, name: str, stats: AgentStats, executor: Optional[Executor]
) -> StreamConsumer:
    """A stage's consumer (outputs and tables committed with the ack) or a plain one."""
    if spec.is_stage:
        return StageConsumer(client, spec, name, stats, executor, maxlen=spec.maxlen)
    return StreamConsumer(client, spec, name, stats, executor)


class InProcessRunner:
    """``concurrency`` consumers on this event loop, each on its own connection."""

    def __init__(
        self,
        spec: AgentSpec,
        connection: RedisConnection,
        base: str,
        stats: AgentStats,
        executor: Optional[Executor] = None,
    ) -> None:
        self.spec, self.connection, self.base, self.stats = spec, connection, base, stats
        self.executor = executor
        self.consumers: list[StreamConsumer] = []
        self._clients: list = []
        self._stopping = False
        self.restarts = 0

    async def start(self) -> None:
        await prepare(self.spec, self.connection)
        for slot in range(self.spec.concurrency):
            client = self.connection.new_client(max_connections=2, **consumer_client_options(self.spec))
            self._clients.append(client)
            consumer = make_consumer(
                client, self.spec, consumer_name(self.base, self.spec, str(slot)), self.stats, self.executor
            )
            self.consumers.append(consumer)
            self._start(slot)

    def _start(self, slot: int) -> None:
        task = self.consumers[slot].start()
        task.add_done_callback(lambda done, slot=slot: self._ended(slot, done))

    def _ended(self, slot: int, task: asyncio.Task) -> None:
        """A consumer task that ends while the agent runs is a defect somewhere: say so loudly, start it again."""
        if self._stopping or slot >= len(self.consumers) or self.consumers[slot].task is not task:
            return
        error = None if task.cancelled() else task.exception()
        log.error(
            "agent %s: consumer %s ended unexpectedly (%s); starting it again",
            self.spec.name, self.consumers[slot].name, "cancelled" if task.cancelled() else repr(error),
            exc_info=error,
        )  # fmt: skip
        self.restarts += 1
        old = self.consumers[slot]
        self.consumers[slot] = make_consumer(old.client, self.spec, old.name, self.stats, self.executor)
        self._start(slot)

    @property
    def expected(self) -> int:
        return self.spec.concurrency

    @property
    def active(self) -> int:
        return sum(1 for c in self.consumers if c.task is not None and not c.task.done())

    async def stop(self, grace: float, finish_read: bool = True) -> None:
        self._stopping = True
        await stop_consumers(self.consumers, grace, finish_read)
        for client in self._clients:
            await client.aclose()
        self.consumers, self._clients = [], []


class ProcessRunner:
    """``processes`` forked workers, supervised and restarted under the same names."""

    def __init__(
        self, spec: AgentSpec, connection: RedisConnection, base: str, stats: AgentStats, grace: float, threads: int = 5
    ) -> None:
        self.spec, self.connection, self.base, self.stats, self.grace = spec, connection, base, stats, grace
        self.threads = threads
        self._context = multiprocessing.get_context("fork")
        self._workers: dict[int, multiprocessing.Process] = {}
        self._counters = [self._context.Array("d", len(_SHARED_FIELDS), lock=False) for _ in range(spec.processes)]
        self._supervisor: Optional[asyncio.Task] = None
        self._stopping = False
        self.restarts = 0

    async def start(self) -> None:
        await prepare(self.spec, self.connection)
        for index in range(self.spec.processes):
            self._spawn(index)
        self._supervisor = asyncio.get_running_loop().create_task(self._supervise())

    def _spawn(self, index: int) -> None:
        process = self._context.Process(
            target=_worker_main,
            args=(
                self.spec,
                self.connection.url,
                self.connection.is_cluster,
                self.base,
                index,
                self._counters[index],
                self.grace,
                self.threads,
            ),
            name=f"streammachine-{self.spec.name}-w{index}",
            daemon=True,
        )
        process.start()
        self._workers[index] = process

    async def _supervise(self) -> None:
        while not self._stopping:
            await asyncio.sleep(0.2)
            for index, process in list(self._workers.items()):
                if not process.is_alive() and not self._stopping:
                    log.warning(
                        "agent %s: worker %d (pid %s) exited with %s; restarting it",
                        self.spec.name,
                        index,
                        process.pid,
                        process.exitcode,
                    )
                    self.restarts += 1
                    self._spawn(index)
            self._publish_stats()

    def _publish_stats(self) -> None:
        totals = [sum(c[i] for c in self._counters) for i in range(len(_SHARED_FIELDS))]
        for name, value in zip(_SHARED_FIELDS, totals):
            setattr(self.stats, name, value if name == "handler_seconds" else int(value))

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._workers.values() if p.is_alive()]

    @property
    def active(self) -> int:
        return len(self.pids) * self.spec.concurrency

    @property
    def expected(self) -> int:
        return (self.spec.processes or 1) * self.spec.concurrency

    async def stop(self, grace: float, finish_read: bool = True) -> None:
        """SIGTERM the workers: each finishes its read in hand within ``grace`` (``finish_read`` is moot here)."""
        self._stopping = True
        if self._supervisor is not None:
            self._supervisor.cancel()
        for process in self._workers.values():
            if process.is_alive():
                os.kill(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace + 1
        for process in self._workers.values():
            while process.is_alive() and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            if process.is_alive():
                log.warning("worker pid %s did not stop within grace; killing it", process.pid)
                process.kill()
            process.join(timeout=1)
        self._publish_stats()
        self._workers = {}


def _worker_main(
    spec: AgentSpec, url: str, cluster: bool, base: str, index: int, counters, grace: float, threads: int
) -> None:
    """Entry point of a forked worker: a fresh event loop, its own connections."""
    signal.set_wakeup_fd(-1)  # the parent's loop owns the inherited wakeup pipe
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group; the parent decides
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        import uvloop

        run = uvloop.run
    except ImportError:
        run = asyncio.run
    run(_worker_async(spec, url, cluster, base, index, counters, grace, threads))
    os._exit(0)  # skip inherited atexit handlers (the parent's Manager, pools)


async def _worker_async(spec, url, cluster, base, index, counters, grace, threads) -> None:
    stats = AgentStats()
    executor = ThreadPoolExecutor(threads, thread_name_prefix="streammachine-handler") if spec.threaded else None
    stopped = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stopped.set)
    clients, consumers = [], []
    for slot in range(spec.concurrency):
        client = make_client(url, max_connections=2, cluster=cluster, **consumer_client_options(spec))
        clients.append(client)
        if slot == 0:
            await load_tables(spec, client)  # fresh from Redis: what the parent held at fork may be old
        consumer = make_consumer(client, spec, consumer_name(base, spec, f"w{index}.{slot}"), stats, executor)
        consumer.start()
        consumers.append(consumer)

    def publish() -> None:
        for i, name in enumerate(_SHARED_FIELDS):
            counters[i] = getattr(stats, name)

    parent = os.getppid()
    while not stopped.is_set():
        try:
            await asyncio.wait_for(stopped.wait(), timeout=0.2)
        except asyncio.TimeoutError:
            pass
        publish()
        if os.getppid() != parent:  # the parent was killed (no SIGTERM came): do not run on as an orphan
            log.warning("worker %s: parent %d is gone; stopping", os.getpid(), parent)
            stopped.set()
    await stop_consumers(consumers, grace)
    publish()
    for client in clients:
        await client.aclose()
    if executor is not None:
        executor.shutdown(wait=False, cancel_futures=True)
