"""App: the registry, the lifecycle, send, health. A thin facade.

Work is done by collaborators: ``RedisConnection`` (where and how to talk to
Redis), ``InProcessRunner``/``ProcessRunner`` (an agent's consumers),
``TimerRunner`` (a timer), ``Storage`` (shared state).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import gc
import logging
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Awaitable, Callable, Dict, List, Optional, Sequence, Tuple, Union

from streammachine.config import AppConfig, ConsumerConfig, Settings, TimerConfig
from streammachine.engine.executors import InProcessRunner, ProcessRunner, consumer_base
from streammachine.engine.limits import ensure_open_files
from streammachine.engine.specs import AgentSpec, AgentStats, TimerSpec, handler_name
from streammachine.engine.timers import TimerRunner
from streammachine.redis.connection import RedisConnection, ensure_group
from streammachine.redis.inspect import fetch_groups
from streammachine.redis.positions import minid_for_age
from streammachine.state.storage import Storage
from streammachine.state.table import _MISSING as _NO_DEFAULT
from streammachine.state.table import Table

log = logging.getLogger("streammachine.app")

Hook = Callable[[], Awaitable[Any]]


class AppStateError(RuntimeError):
    """An operation that the App's current state does not allow."""


class App:
    """A StreamMachine application: agents and timers on Redis Streams.

    ``App(name)`` does no I/O: connecting happens in ``start()``/``run()``.
    """

    def __init__(
        self,
        name: str = __name__,
        to_scan: bool = True,
        max_processes: int = 5,
        max_threads: int = 5,
        *,
        redis_url: Optional[str] = None,
        stream_maxlen: Optional[int] = None,
        stream_max_age: Optional[float] = None,
        grace_seconds: Optional[float] = None,
        consumer_config: Optional[ConsumerConfig] = None,
        storage_backend: Optional[str] = None,
        settings: Optional[Settings] = None,
        dashboard_enabled: bool = False,
    ) -> None:
        self.settings = settings or Settings.from_env()
        self.name = name
        self.to_scan = to_scan  # decorators register at once; kept for API compatibility
        self.config = AppConfig.from_settings(
            self.settings,
            name=name,
            max_processes=max_processes,
            max_threads=max_threads,
            stream_maxlen=stream_maxlen,
            stream_max_age=stream_max_age,
            grace_seconds=grace_seconds,
            consumer=consumer_config,
        )
        self.dashboard_enabled = dashboard_enabled
        self._storage_backend = storage_backend or self.settings.storage_backend
        self._redis = RedisConnection(url=redis_url, settings=self.settings)
        self._agents: Dict[str, AgentSpec] = {}
        self._timers: Dict[str, TimerSpec] = {}
        self._tables: Dict[str, Table] = {}
        self._stats: Dict[str, AgentStats] = {}
        self._runners: Dict[str, Union[InProcessRunner, ProcessRunner]] = {}
        self._timer_runners: Dict[str, TimerRunner] = {}
        self._startup_hooks: List[Hook] = []
        self._shutdown_hooks: List[Hook] = []
        self._state = "idle"  # idle -> starting -> running -> stopping -> stopped
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._stopped: Optional[asyncio.Event] = None
        self._swap_locks: Dict[str, asyncio.Lock] = {}
        self.last_swap_ms: Optional[float] = None
        self._executor: Optional[ThreadPoolExecutor] = None
        self._base = f"{consumer_base(self.settings.consumer_name)}-{name}"

    # -- properties ----------------------------------------------------------

    @property
    def redis(self) -> RedisConnection:
        return self._redis

    @property
    def storage(self) -> Storage:
        return Storage(self._storage_backend, connection=self._redis)

    @property
    def state(self) -> str:
        return self._state

    @property
    def is_running(self) -> bool:
        return self._state == "running"

    @property
    def agents(self) -> Dict[str, AgentSpec]:
        return dict(self._agents)

    @property
    def timers(self) -> Dict[str, TimerSpec]:
        return dict(self._timers)

    # -- registration --------------------------------------------------------

    def agent(
        self,
        stream: str,
        group: Optional[str] = None,
        concurrency: int = 1,
        processes: Optional[int] = None,
        *,
        batch: bool = False,
        name: Optional[str] = None,
        config: Optional[ConsumerConfig] = None,
        threaded: bool = False,
        output: Optional[str] = None,
        tables: Sequence[Table] = (),
        periodic: Optional[Tuple[float, Callable[[], Any]]] = None,
        **options: Any,
    ) -> Callable:
        """Register a stream consumer. Re-registering a name replaces it (hot swap when running).

        ``threaded=True`` runs a sync handler in the App's thread pool
        (``max_threads``), so blocking code does not stall the event loop.

        A stage: ``output=STREAM`` writes what the handler returns (a record, a
        list of them, ``Emit(stream, record)`` for other streams) and
        ``tables=[...]`` lets it change ``app.table`` tables; both are committed
        with the ack of the entry, in one atomic step per read (see
        ``engine/commit.py``). ``periodic=(seconds, hook)``: a stage's hook run
        every ``seconds`` in its consumer's task, its return value and table
        writes committed like a handler's (e.g. closing the windows of quiet
        keys by wall-clock time).

        ``options`` override fields of ``ConsumerConfig`` (count, block_ms,
        start_id, max_deliveries, on_error, retry_delay_ms, claim_idle_ms,
        dead_letter_stream).
        """
        consumer_config = (config or self.config.consumer).replace(**options)

        def decorate(fn: Callable) -> Callable:
            spec = AgentSpec(
                name=handler_name(fn, name),
                handler=fn,
                stream=stream,
                group=group or self.config.default_group,
                concurrency=concurrency,
                processes=processes,
                batch=batch,
                config=consumer_config,
                threaded=threaded,
                output=output,
                tables=tuple(tables),
                maxlen=self.config.stream_maxlen,
                periodic=periodic,
            )
            self._check_process_budget(spec)
            self._register_agent(spec)
            return fn

        return decorate

    def table(self, name: str, *, default: Any = _NO_DEFAULT, ttl: Optional[float] = None) -> Table:
        """Keyed state for stages: a dict-like table kept in Redis, changed with the ack of the entries.

        Calling it again with the same name returns the same table (a re-run
        notebook cell keeps its state); ``default`` and ``ttl`` then take the
        new values.
        """
        table = self._tables.get(name)
        if table is None:
            table = self._tables[name] = Table(name, default=default, ttl=ttl)
        else:
            fresh = Table(name, default=default, ttl=ttl)  # validates the arguments
            table.default, table.ttl_ms = fresh.default, fresh.ttl_ms
        return table

    @property
    def tables(self) -> Dict[str, Table]:
        return dict(self._tables)

    def timer(self, t: float, *, name: Optional[str] = None, run_immediately: bool = False) -> Callable:
        """Register a periodic task every ``t`` seconds (fixed rate, never overlapping itself)."""
        config = TimerConfig(interval=t, name=name, run_immediately=run_immediately)

        def decorate(fn: Callable) -> Callable:
            spec = TimerSpec(name=handler_name(fn, name), handler=fn, config=config)
            replaced = spec.name in self._timers
            self._timers[spec.name] = spec
            if self._state == "running" or spec.name in self._timer_runners:
                self._in_loop(self._swap_timer(spec))
                if replaced:
                    print(f"streammachine: timer {spec.name!r} replaced")
            return fn

        return decorate

    def on_startup(self, fn: Hook) -> Hook:
        self._startup_hooks.append(fn)
        return fn

    def on_shutdown(self, fn: Hook) -> Hook:
        self._shutdown_hooks.append(fn)
        return fn

    def unregister(self, name: str) -> None:
        """Remove an agent or timer (stopping it if running) by full or short name."""
        key = self._resolve_name(name)
        if key in self._agents:
            del self._agents[key]
            if self._state == "running":
                self._in_loop(self._swap_agent(key, None))
        else:
            del self._timers[key]
            runner = self._timer_runners.pop(key, None)
            if runner:
                runner.stop()

    def _resolve_name(self, name: str) -> str:
        known = list(self._agents) + list(self._timers)
        if name in known:
            return name
        matches = [k for k in known if k.rsplit(".", 1)[-1] == name]
        if len(matches) == 1:
            return matches[0]
        raise KeyError(
            f"no agent or timer named {name!r}" + (f" (ambiguous: {matches})" if matches else f"; registered: {known}")
        )

    def _check_process_budget(self, spec: AgentSpec) -> None:
        used = sum(s.processes or 0 for n, s in self._agents.items() if n != spec.name)
        if spec.processes and used + spec.processes > self.config.max_processes:
            raise ValueError(
                f"agent {spec.name!r}: processes={spec.processes} would make {used + spec.processes} worker "
                f"processes, over App(max_processes={self.config.max_processes})"
            )

    def _register_agent(self, spec: AgentSpec) -> None:
        replaced = spec.name in self._agents
        self._agents[spec.name] = spec
        self._stats.setdefault(spec.name, AgentStats())
        if self._state == "running" or spec.name in self._runners:
            self._in_loop(self._swap_agent(spec.name, spec))
            if replaced:
                print(
                    f"streammachine: agent {spec.name!r} replaced; its consumers hand over (pending entries carry over)"
                )
        # while "starting", startup() picks it up when it finishes; while "stopping", the next start does

    def _in_loop(self, coro: Awaitable) -> None:
        loop = self._loop
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            task = loop.create_task(coro)
            task.add_done_callback(_log_task_error)
        else:
            asyncio.run_coroutine_threadsafe(coro, loop)

    async def _swap_agent(self, name: str, spec: Optional[AgentSpec]) -> None:
        lock = self._swap_locks.setdefault(name, asyncio.Lock())
        async with lock:
            started = time.perf_counter()
            old = self._runners.pop(name, None)
            if old is not None:
                # the successor takes the rest of the old read back from the pending list at once
                await old.stop(self.config.grace_seconds, finish_read=False)
            if spec is not None and self._agents.get(name) is spec:
                self._runners[name] = await self._start_runner(spec)
            self.last_swap_ms = (time.perf_counter() - started) * 1000
            log.info("agent %s %s in %.1f ms", name, "swapped" if spec else "removed", self.last_swap_ms)

    async def _swap_timer(self, spec: TimerSpec) -> None:
        old = self._timer_runners.pop(spec.name, None)
        if old is not None:
            old.stop()
            if old.task is not None:
                await asyncio.wait([old.task], timeout=self.config.grace_seconds)
        runner = TimerRunner(spec)
        runner.start()
        self._timer_runners[spec.name] = runner

    async def _start_runner(self, spec: AgentSpec):
        stats = self._stats.setdefault(spec.name, AgentStats())
        if spec.processes:
            runner = ProcessRunner(
                spec, self._redis, self._base, stats, self.config.grace_seconds, self.config.max_threads
            )
        else:
            runner = InProcessRunner(
                spec, self._redis, self._base, stats, self._thread_pool() if spec.threaded else None
            )
        await runner.start()
        return runner

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> Optional[asyncio.Task]:
        """Start the app.

        Headless (no running event loop): blocks until SIGINT/SIGTERM or
        ``stop()``, on uvloop when installed. Inside a running loop (a
        notebook): schedules the app on that loop and returns the startup
        task at once; the agents keep running between cells.
        """
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is not None:
            task = loop.create_task(self.startup(), name=f"streammachine:{self.name}:startup")
            task.add_done_callback(_log_task_error)
            return task
        try:
            import uvloop

            uvloop.run(self._run_headless())
        except ImportError:
            asyncio.run(self._run_headless())
        return None

    async def _run_headless(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._request_stop, sig)
        try:
            await self.run()
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)

    def _request_stop(self, sig: signal.Signals) -> None:
        log.info("received %s: shutting down", sig.name)
        if self._stopped is not None:
            self._stopped.set()

    async def run(self, count: Optional[int] = None, timeout: Optional[float] = None) -> int:
        """Awaitable entry: start, serve until ``stop()``/a signal, shut down; returns the entries handled.

        Bounded runs for notebooks and scripts: stop once the agents handled
        ``count`` entries between them (handled, dead-lettered or skipped), or
        after ``timeout`` seconds, whichever comes first.
        """
        await self.startup()
        before = self._handled()
        stopped = self._stopped
        assert stopped is not None  # startup() made it
        try:
            deadline = None if timeout is None else time.monotonic() + timeout
            while not stopped.is_set():
                if count is not None and self._handled() - before >= count:
                    break
                if deadline is not None and time.monotonic() >= deadline:
                    break
                wait = 0.02 if count is not None else (None if deadline is None else deadline - time.monotonic())
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stopped.wait(), wait)
        finally:
            await self.shutdown()
        return self._handled() - before

    def _handled(self) -> int:
        return sum(s.processed + s.dead_lettered + s.skipped for s in self._stats.values())

    def use_server(self, url: str) -> None:
        """Point a stopped App at another Redis (the test harness does); the next start connects there."""
        if self._state not in ("idle", "stopped"):
            raise AppStateError(f"app {self.name!r} is {self._state}: stop it before changing its server")
        self._redis = RedisConnection(url=url, settings=self.settings)

    async def startup(self) -> None:
        if self._state not in ("idle", "stopped"):
            raise AppStateError(f"app {self.name!r} is already {self._state}")
        self._state = "starting"
        self._loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        try:
            client = await self._redis.get_client()
            try:
                await asyncio.wait_for(client.ping(), timeout=10)
            except Exception as exc:
                raise ConnectionError(f"cannot reach Redis at {self._redis.safe_url}: {exc}") from None
            ensure_open_files(self._agents.values(), self._redis.max_connections, self.name)
            # groups first, so whatever startup hooks send is not missed under start id "$"
            for spec in self._agents.values():
                await ensure_group(client, spec.stream, spec.group, spec.config.start_id)
            for hook in self._startup_hooks:
                await hook()
            if any(spec.processes for spec in self._agents.values()):
                await asyncio.to_thread(self.storage.prepare_for_fork)
            for name, spec in list(self._agents.items()):
                self._runners[name] = await self._start_runner(spec)
            await self._start_registered()
        except BaseException:
            self._state = "running"
            await self.shutdown()
            raise
        self._state = "running"
        await self._start_registered()  # what cells registered while the hooks and runners started
        if self.settings.gc_freeze and self._on_notebook_loop():
            # Objects alive now (imports, notebook state) leave the cyclic GC's generations:
            # full collections over them otherwise stall the kernel for 100+ ms under load.
            gc.freeze()
        log.info(
            "app %s running: %d agents, %d timers on %s",
            self.name,
            len(self._agents),
            len(self._timers),
            self._redis.safe_url,
        )

    async def _start_registered(self) -> None:
        for name, spec in list(self._agents.items()):
            if name not in self._runners:
                self._runners[name] = await self._start_runner(spec)
        for name, spec in list(self._timers.items()):
            if name not in self._timer_runners:
                runner = TimerRunner(spec)
                runner.start()
                self._timer_runners[name] = runner

    def _thread_pool(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(
                self.config.max_threads, thread_name_prefix=f"streammachine-{self.name}"
            )
        return self._executor

    @staticmethod
    def _on_notebook_loop() -> bool:
        import sys

        shell = sys.modules.get("IPython")
        return shell is not None and getattr(shell, "get_ipython", lambda: None)() is not None

    async def shutdown(self) -> None:
        """Stop timers and agents (in-flight work finishes within the grace period), run hooks, close."""
        if self._state in ("idle", "stopped", "stopping"):
            return
        self._state = "stopping"
        grace = self.config.grace_seconds
        try:
            for runner in self._timer_runners.values():
                runner.stop()
            await asyncio.gather(*(r.stop(grace) for r in self._runners.values()), return_exceptions=True)
            timer_tasks = [r.task for r in self._timer_runners.values() if r.task is not None]
            if timer_tasks:
                _, late = await asyncio.wait(timer_tasks, timeout=grace)
                for task in late:
                    task.cancel()
            for hook in self._shutdown_hooks:
                try:
                    await hook()
                except Exception:
                    log.exception("on_shutdown hook %r failed", hook)
        finally:
            self._runners.clear()
            self._timer_runners.clear()
            if self._executor is not None:
                self._executor.shutdown(wait=False, cancel_futures=True)
                self._executor = None
            await self._redis.close()
            self._state = "stopped"
            if self._stopped is not None:
                self._stopped.set()

    def stop(self) -> Union[asyncio.Task, concurrent.futures.Future, None]:
        """Shut down; works awaited (``await app.stop()``) or not (``app.stop()`` in a cell)."""
        if self._loop is None or self._state in ("idle", "stopped"):
            return None
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            return self._loop.create_task(self.shutdown())
        return asyncio.run_coroutine_threadsafe(self.shutdown(), self._loop)

    # -- producing -----------------------------------------------------------

    async def send(self, topic: str, record: Any) -> str:
        """XADD one record (a dict, or a pydantic/msgspec/dataclass instance); returns its id."""
        return await self._redis.xadd(topic, record, maxlen=self.config.stream_maxlen, minid=self._minid())

    async def send_batch(self, topic: str, records: List[Any], *, atomic: bool = False) -> List[str]:
        """XADD many records (dicts or model instances) in pipelined round trips; returns their ids in order.

        ``atomic=True`` writes all or none (one MULTI/EXEC). Otherwise, when Redis refuses
        some records, ``BatchSendError`` (streammachine.redis.producer) says which were written.
        """
        return await self._redis.pipeline_xadd(
            topic, records, maxlen=self.config.stream_maxlen, minid=self._minid(), atomic=atomic
        )

    def _minid(self) -> Optional[str]:
        """``stream_max_age``: entries older than that many seconds are trimmed as new ones arrive."""
        age = self.config.stream_max_age
        return None if age is None else minid_for_age(age)

    # -- observing -----------------------------------------------------------

    async def health_check(self) -> dict:
        redis_ok = await self._redis.health_check()
        expected = sum(r.expected for r in self._runners.values()) + len(self._timer_runners)
        active = sum(r.active for r in self._runners.values()) + sum(
            1 for r in self._timer_runners.values() if r.task is not None and not r.task.done()
        )
        return {
            "status": "healthy"
            if redis_ok and self._state in ("running", "idle") and active >= expected
            else "degraded",
            "redis": "connected" if redis_ok else "disconnected",
            "active_tasks": active,
            "registered_agents": len(self._agents),
            "registered_timers": len(self._timers),
            "state": self._state,
            "server": self._redis.safe_url,
        }

    async def status(self) -> List[dict]:
        """Per agent: counters, rate, and (from Redis) pending and lag of its group."""
        rows = []
        groups = {}
        if self._state == "running":
            groups = await fetch_groups(await self._redis.get_client(), [s.stream for s in self._agents.values()])
        for name, spec in self._agents.items():
            stats = self._stats.setdefault(name, AgentStats())
            group = groups.get((spec.stream, spec.group), {})
            rows.append(
                {
                    "agent": name,
                    "stream": spec.stream,
                    "group": spec.group,
                    "rate": round(stats.rate(), 1),
                    "running": name in self._runners,
                    **stats.as_dict(),
                    "pending": group.get("pending"),
                    "lag": group.get("lag"),
                }
            )
        for name, spec in self._timers.items():
            rows.append(
                {
                    "timer": name,
                    "interval": spec.config.interval,
                    "runs": spec.runs,
                    "failures": spec.failures,
                    "last_error": spec.last_error,
                    "running": name in self._timer_runners,
                }
            )
        return rows

    def stats(self, name: str) -> AgentStats:
        return self._stats[self._resolve_name(name)]

    def dashboard(self):
        """An ipywidgets panel of agents, rates, pending, lag and errors (needs the notebook extras)."""
        from streammachine.notebook.dashboard import Dashboard

        return Dashboard(self)

    def __repr__(self) -> str:
        return f"App({self.name!r}, state={self._state}, agents={len(self._agents)}, timers={len(self._timers)})"


def _log_task_error(task: asyncio.Future) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("streammachine background task failed", exc_info=task.exception())
