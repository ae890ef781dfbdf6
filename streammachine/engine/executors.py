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
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any, Optional

from streammachine.engine import loop as event_loop
from streammachine.engine.consumer import StreamConsumer
from streammachine.engine.identity import consumer_name
from streammachine.engine.specs import AgentSpec, AgentStats
from streammachine.engine.stage import StageConsumer
from streammachine.engine.supervision import WorkerPool, parent_alive, report_ready
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
                client, self.spec, consumer_name(self.base, self.spec.name, str(slot)), self.stats, self.executor
            )
            self.consumers.append(consumer)
            self._start(slot)

    def _start(self, slot: int) -> None:
        task = self.consumers[slot].start()
        task.add_done_callback(partial(self._ended, slot))

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


class ForkedProcess:
    """A forked ``multiprocessing.Process`` as the supervision core sees a worker."""

    def __init__(self, process: multiprocessing.process.BaseProcess) -> None:
        self.process = process

    @property
    def pid(self) -> Optional[int]:
        return self.process.pid

    def poll(self) -> Optional[int]:
        return None if self.process.is_alive() else self.process.exitcode

    def kill(self) -> None:
        self.process.kill()


class ProcessRunner(WorkerPool):
    """``processes`` forked workers, supervised (engine/supervision.py) and restarted under the same names."""

    def __init__(
        self, spec: AgentSpec, connection: RedisConnection, base: str, stats: AgentStats, grace: float, threads: int = 5
    ) -> None:
        assert spec.processes, "a ProcessRunner is for processes=N agents"
        super().__init__(spec.processes, f"agent {spec.name}")
        self.spec, self.connection, self.base, self.stats, self.grace = spec, connection, base, stats, grace
        self.threads = threads
        self._context = multiprocessing.get_context("fork")
        self._counters = [self._context.Array("d", len(_SHARED_FIELDS), lock=False) for _ in range(spec.processes)]
        self._supervisor: Optional[asyncio.Task] = None

    async def start(self) -> None:
        await prepare(self.spec, self.connection)
        self.spawn_all()
        self._supervisor = asyncio.get_running_loop().create_task(self._supervise())

    def launch(self, index: int, ready_fd: int) -> ForkedProcess:
        assert self.connection.url is not None, "prepare() resolved the URL"
        worker = ForkedWorker(
            spec=self.spec,
            url=self.connection.url,
            cluster=self.connection.is_cluster,
            base=self.base,
            index=index,
            counters=self._counters[index],
            grace=self.grace,
            threads=self.threads,
            ready_fd=ready_fd,
            parent_pid=os.getpid(),
        )
        process = self._context.Process(
            target=worker.main, name=f"streammachine-{self.spec.name}-w{index}", daemon=True
        )
        process.start()
        return ForkedProcess(process)

    async def _supervise(self) -> None:
        while True:
            for slot in self.check():
                log.error("%s; not restarting it (the agent runs on with fewer workers)", slot.given_up)
                self.stats.last_error = slot.given_up
            self._publish_stats()
            await asyncio.sleep(self.poll_interval)

    def _publish_stats(self) -> None:
        totals = [sum(c[i] for c in self._counters) for i in range(len(_SHARED_FIELDS))]
        for name, value in zip(_SHARED_FIELDS, totals):
            setattr(self.stats, name, value if name == "handler_seconds" else int(value))

    @property
    def active(self) -> int:
        return len(self.pids) * self.spec.concurrency

    @property
    def expected(self) -> int:
        return (self.spec.processes or 1) * self.spec.concurrency

    async def stop(self, grace: float, finish_read: bool = True) -> None:
        """SIGTERM the workers: each finishes its read in hand within ``grace`` (``finish_read`` is moot here)."""
        if self._supervisor is not None:
            self._supervisor.cancel()
        await self.stop_all(grace + 1)
        self._publish_stats()


@dataclass
class ForkedWorker:
    """One forked worker of an agent: what it inherits, and its life (a fresh event loop, its own connections)."""

    spec: AgentSpec
    url: str
    cluster: bool
    base: str
    index: int
    counters: Any  # a shared array of _SHARED_FIELDS
    grace: float
    threads: int
    ready_fd: int
    parent_pid: int  # taken before the fork: the child may start after its parent died

    def main(self) -> None:
        signal.set_wakeup_fd(-1)  # the parent's loop owns the inherited wakeup pipe
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # until the worker's own loop handles it
        event_loop.run(self._run())
        os._exit(0)  # skip inherited atexit handlers (the parent's Manager, pools)

    async def _run(self) -> None:
        stopped = asyncio.Event()
        who = f"agent {self.spec.name} worker {self.index}"
        with event_loop.StopSignals(lambda _sig: stopped.set(), who=who, worker=True):
            await self._serve(stopped)

    async def _serve(self, stopped: asyncio.Event) -> None:
        spec = self.spec
        stats = AgentStats()
        executor = (
            ThreadPoolExecutor(self.threads, thread_name_prefix="streammachine-handler") if spec.threaded else None
        )
        clients, consumers = [], []
        for slot in range(spec.concurrency):
            client = make_client(self.url, max_connections=2, cluster=self.cluster, **consumer_client_options(spec))
            clients.append(client)
            if slot == 0:
                await load_tables(spec, client)  # fresh from Redis: what the parent held at fork may be old
            name = consumer_name(self.base, spec.name, f"w{self.index}.{slot}")
            consumer = make_consumer(client, spec, name, stats, executor)
            consumer.start()
            consumers.append(consumer)
        report_ready(self.ready_fd)

        def publish() -> None:
            for i, field_name in enumerate(_SHARED_FIELDS):
                self.counters[i] = getattr(stats, field_name)

        while not stopped.is_set():
            try:
                await asyncio.wait_for(stopped.wait(), timeout=0.2)
            except asyncio.TimeoutError:
                pass
            publish()
            if not parent_alive(self.parent_pid):  # killed (no SIGTERM came): do not run on as an orphan
                log.warning("worker %s: parent %d is gone; stopping", os.getpid(), self.parent_pid)
                stopped.set()
        await stop_consumers(consumers, self.grace)
        publish()
        for client in clients:
            await client.aclose()
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)
