"""The running side of an App's registry: one executor per agent, one ``TimerRunner`` per timer.

``Workload`` starts what is registered and not yet running, swaps one agent or
timer for its re-registered successor (the old consumers finish the entry in
hand and stop; the new ones take the same consumer names, so pending entries
carry over), and stops everything within a grace period. The App owns the
registry and the lifecycle; this is what they set running.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Awaitable, Callable, Dict, List, Mapping, Optional, Tuple, Union

from streammachine.config import AppConfig
from streammachine.engine.executors import InProcessRunner, ProcessRunner
from streammachine.engine.limits import ensure_open_files
from streammachine.engine.specs import AgentSpec, AgentStats, TimerSpec
from streammachine.engine.timers import TimerRunner
from streammachine.redis.connection import RedisConnection, ensure_group

log = logging.getLogger("streammachine.app")

Runner = Union[InProcessRunner, ProcessRunner]


class Workload:
    """Runners for ``agents``/``timers`` (the App's live registry dicts); counters go to ``stats``."""

    def __init__(
        self,
        app_name: str,
        connection: RedisConnection,
        base: str,
        config: AppConfig,
        agents: Mapping[str, AgentSpec],
        timers: Mapping[str, TimerSpec],
        stats: Dict[str, AgentStats],
    ) -> None:
        self.app_name, self.connection, self.base, self.config = app_name, connection, base, config
        self.agents, self.timers, self.stats = agents, timers, stats
        self.runners: Dict[str, Runner] = {}
        self.timer_runners: Dict[str, TimerRunner] = {}
        self.last_swap_ms: Optional[float] = None
        self._swap_locks: Dict[str, asyncio.Lock] = {}
        self._executor: Optional[ThreadPoolExecutor] = None

    # -- starting ------------------------------------------------------------

    def check_process_budget(self, spec: AgentSpec) -> None:
        """Refuse an agent whose ``processes`` would take the App over ``max_processes``."""
        used = sum(s.processes or 0 for n, s in self.agents.items() if n != spec.name)
        if spec.processes and used + spec.processes > self.config.max_processes:
            raise ValueError(
                f"agent {spec.name!r}: processes={spec.processes} would make {used + spec.processes} worker "
                f"processes, over App(max_processes={self.config.max_processes})"
            )

    async def open(self, startup_hooks: List[Callable[[], Awaitable[Any]]], storage: Callable[[], Any]) -> None:
        """Reach Redis, check the open-files budget, create the groups, run the startup hooks, start everything.

        The groups come before the hooks, so what a startup hook sends is not missed under start id "$".
        ``storage`` is asked for only when an agent forks worker processes (they share it).
        """
        client = await self.connection.get_client()
        try:
            await asyncio.wait_for(client.ping(), timeout=10)
        except Exception as exc:
            raise ConnectionError(f"cannot reach Redis at {self.connection.safe_url}: {exc}") from None
        ensure_open_files(self.agents.values(), self.connection.max_connections, self.app_name)
        for spec in self.agents.values():
            await ensure_group(client, spec.stream, spec.group, spec.config.start_id)
        for hook in startup_hooks:
            await hook()
        if any(spec.processes for spec in self.agents.values()):
            await asyncio.to_thread(storage().prepare_for_fork)
        await self.start_missing()

    async def start_missing(self) -> None:
        """Start every registered agent and timer that does not run yet."""
        for name, spec in list(self.agents.items()):
            if name not in self.runners:
                self.runners[name] = await self._start_runner(spec)
        for name, timer in list(self.timers.items()):
            if name not in self.timer_runners:
                self._start_timer(timer)

    async def _start_runner(self, spec: AgentSpec) -> Runner:
        stats = self.stats.setdefault(spec.name, AgentStats())
        runner: Runner
        if spec.processes:
            runner = ProcessRunner(
                spec, self.connection, self.base, stats, self.config.grace_seconds, self.config.max_threads
            )
        else:
            runner = InProcessRunner(
                spec, self.connection, self.base, stats, self._thread_pool() if spec.threaded else None
            )
        await runner.start()
        return runner

    def _start_timer(self, spec: TimerSpec) -> None:
        runner = TimerRunner(spec)
        runner.start()
        self.timer_runners[spec.name] = runner

    def _thread_pool(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(
                self.config.max_threads, thread_name_prefix=f"streammachine-{self.app_name}"
            )
        return self._executor

    # -- hot swaps -----------------------------------------------------------

    async def swap_agent(self, name: str, spec: Optional[AgentSpec]) -> None:
        """Replace agent ``name``'s runner by one for ``spec`` (None: remove it), one swap per name at a time."""
        async with self._swap_locks.setdefault(name, asyncio.Lock()):
            started = time.perf_counter()
            old = self.runners.pop(name, None)
            if old is not None:
                # the successor takes the rest of the old read back from the pending list at once
                await old.stop(self.config.grace_seconds, finish_read=False)
            if spec is not None and self.agents.get(name) is spec:  # not re-registered again meanwhile
                self.runners[name] = await self._start_runner(spec)
            self.last_swap_ms = (time.perf_counter() - started) * 1000
            log.info("agent %s %s in %.1f ms", name, "swapped" if spec else "removed", self.last_swap_ms)

    async def swap_timer(self, spec: TimerSpec) -> None:
        old = self.timer_runners.pop(spec.name, None)
        if old is not None:
            old.stop()
            if old.task is not None:
                await asyncio.wait([old.task], timeout=self.config.grace_seconds)
        self._start_timer(spec)

    def stop_timer(self, name: str) -> None:
        runner = self.timer_runners.pop(name, None)
        if runner is not None:
            runner.stop()

    # -- observing and stopping ------------------------------------------------

    def counts(self) -> Tuple[int, int]:
        """(consumers and timers running, consumers and timers that should be)."""
        expected = sum(r.expected for r in self.runners.values()) + len(self.timer_runners)
        active = sum(r.active for r in self.runners.values()) + sum(
            1 for r in self.timer_runners.values() if r.task is not None and not r.task.done()
        )
        return active, expected

    async def stop(self, grace: float) -> None:
        """Timers stop after their run in hand, agents after their read in hand, both within ``grace``."""
        for timer in self.timer_runners.values():
            timer.stop()
        await asyncio.gather(*(r.stop(grace) for r in self.runners.values()), return_exceptions=True)
        timer_tasks = [r.task for r in self.timer_runners.values() if r.task is not None]
        if timer_tasks:
            _, late = await asyncio.wait(timer_tasks, timeout=grace)
            for task in late:
                task.cancel()

    def clear(self) -> None:
        """Forget the runners (stopped or not) and release the thread pool."""
        self.runners.clear()
        self.timer_runners.clear()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
