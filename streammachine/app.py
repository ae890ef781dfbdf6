"""App: the registry of agents and timers, and their lifecycle. A thin facade.

Work is done by collaborators: ``RedisConnection`` (where and how to talk to
Redis), ``InProcessRunner``/``ProcessRunner`` (an agent's consumers),
``TimerRunner`` (a timer), ``Storage`` (shared state). ``start()`` and
``stop()`` return a ``Transition`` (engine/lifecycle.py) wherever they are
called. Apps register themselves in a weak per-process set: a new App with
the name of a running one replaces (stops) it, and ``running_apps()`` /
``stop_all()`` reach every App of the process (a notebook kernel's).
"""

from __future__ import annotations

import asyncio
import logging
import warnings
import weakref
from typing import Any, Awaitable, Callable, Coroutine, Dict, List, Optional, Sequence, Tuple

from streammachine.config import AppConfig, ConsumerConfig, Settings, TimerConfig
from streammachine.engine.identity import app_consumer_base
from streammachine.engine.lifecycle import ACTIVE_STATES, STOPPED_STATES, Lifecycle, Transition, running_loop
from streammachine.engine.specs import AgentSpec, AgentStats, TimerSpec, TimerStats, handler_name
from streammachine.engine.stage import bind_window
from streammachine.engine.status import AppStatus, app_status
from streammachine.engine.workload import Workload
from streammachine.redis.connection import RedisConnection
from streammachine.redis.inspect import Groups, fetch_groups
from streammachine.redis.positions import minid_for_age
from streammachine.state.storage import Storage
from streammachine.state.table import _MISSING as _NO_DEFAULT
from streammachine.state.table import Table

log = logging.getLogger("streammachine.app")

Hook = Callable[[], Awaitable[Any]]

# Every App of this process, held weakly: a stopped App nobody references goes away.
_apps: weakref.WeakSet[App] = weakref.WeakSet()


def running_apps() -> List[App]:
    """The Apps of this process that are starting, running or stopping (a notebook kernel's included)."""
    return sorted((app for app in list(_apps) if app.state in ACTIVE_STATES), key=lambda app: app.name)


def stop_all() -> List[Transition]:
    """Stop every running App of this process; one ``Transition`` per App (await them, or not)."""
    return [app.stop() for app in running_apps()]


class AppStateError(RuntimeError):
    """An operation that the App's current state does not allow."""


class App(Lifecycle):
    """A StreamMachine application: agents and timers on Redis Streams.

    ``App(name)`` does no I/O: connecting happens in ``start()``/``run()``.
    """

    def __init__(
        self,
        name: str = __name__,
        to_scan: Optional[bool] = None,
        max_processes: int = AppConfig.max_processes,
        max_threads: int = AppConfig.max_threads,
        *,
        redis_url: Optional[str] = None,
        stream_maxlen: Optional[int] = None,
        stream_max_age: Optional[float] = None,
        grace_seconds: Optional[float] = None,
        consumer_config: Optional[ConsumerConfig] = None,
        storage_backend: Optional[str] = None,
        settings: Optional[Settings] = None,
        dashboard_enabled: bool = False,
        dashboard_port: Optional[int] = None,
    ) -> None:
        if to_scan is not None:
            warnings.warn(
                "App(to_scan=...) has no effect: decorators register agents and timers at once",
                DeprecationWarning,
                stacklevel=2,
            )
        self.settings = settings or Settings.current()
        self.name = name
        self.to_scan = True if to_scan is None else to_scan
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
        self.dashboard_enabled = False
        self.dashboard_port: Optional[int] = None
        if dashboard_enabled or dashboard_port is not None:
            self.enable_dashboard(dashboard_port)
        self.worker_index: Optional[int] = None  # set by `streammachine run --workers N` in its workers
        self.instance: Any = None  # this App's entry in the instances registry while it runs
        self.dashboard_candidate: Any = None  # while it runs with the dashboard enabled
        self._storage_backend = storage_backend or self.settings.storage_backend
        self._storage: Optional[Storage] = None
        self._redis = RedisConnection(url=redis_url, settings=self.settings)
        self._agents: Dict[str, AgentSpec] = {}
        self._timers: Dict[str, TimerSpec] = {}
        self._tables: Dict[str, Table] = {}
        self._stats: Dict[str, AgentStats] = {}
        self._timer_stats: Dict[str, TimerStats] = {}
        self._startup_hooks: List[Hook] = []
        self._shutdown_hooks: List[Hook] = []
        self._state = "idle"  # idle -> starting -> running (or failed) -> stopping -> stopped
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._pending: Optional[asyncio.Task] = None  # the last start/stop scheduled on self._loop
        self._predecessor: Optional[Transition] = None  # the stop of the App this one replaces
        self._stopped: Optional[asyncio.Event] = None  # set to end run(): a stop was asked for
        self._shut_down: Optional[asyncio.Event] = None  # set when the shutdown under way has finished
        base = app_consumer_base(self.settings.consumer_name, name)
        self._work = Workload(name, self._redis, base, self.config, self._agents, self._timers, self._stats)
        self._runners, self._timer_runners = self._work.runners, self._work.timer_runners
        self._replace_namesake()
        _apps.add(self)

    def _replace_namesake(self) -> None:
        """A re-run ``App(name=...)`` cell: the earlier App of that name stops (it would share consumer names)."""
        for other in list(_apps):
            if other.name == self.name and (other.state in ACTIVE_STATES or other._pending is not None):
                log.warning("app %r: a new App of this name replaces the running one, which stops", self.name)
                self._predecessor = other.stop()

    # -- properties ----------------------------------------------------------

    @property
    def last_swap_ms(self) -> Optional[float]:
        """How long the last hot swap of an agent took."""
        return self._work.last_swap_ms

    @property
    def redis(self) -> RedisConnection:
        return self._redis

    @property
    def storage(self) -> Storage:
        """This App's shared state (its backend, its Redis): created on first use."""
        if self._storage is None:
            self._storage = Storage.create(
                self._storage_backend, connection=self._redis, manager=self.settings.storage_manager
            )
        return self._storage

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
        window: Any = None,
        wall_clock: Optional[float] = None,
        **options: Any,
    ) -> Callable:
        """Register a stream consumer. Re-registering a name replaces it (hot swap when running).

        ``threaded=True`` runs a sync handler in the App's thread pool (``max_threads``).
        A stage (README "Stages and state"): ``output=STREAM`` writes what the handler returns (a
        record, a list, ``Emit(stream, record)``), ``tables=[...]`` lets it change ``app.table``
        tables, ``periodic=(seconds, hook)`` runs a hook in its consumer's task; all committed with
        the ack, one atomic step per read (``engine/commit.py``). A window stage (README "Windows"):
        ``window=Window...agg(...)`` feeds each read to the window and calls the function with the
        rows it emits; ``wall_clock=seconds`` closes quiet keys' windows by the wall clock.
        ``options`` override ``ConsumerConfig`` fields (count, block_ms, start_id, max_deliveries,
        on_error, retry_delay_ms, claim_idle_ms, dead_letter_stream).
        """
        consumer_config = (config or self.config.consumer).replace(**options)

        def decorate(fn: Callable) -> Callable:
            agent_name = handler_name(fn, name)
            handler, stage_tables, hook, windowed = fn, tuple(tables), periodic, None
            if window is not None or wall_clock is not None:
                previous = self._agents.get(agent_name)
                windowed, hook = bind_window(
                    window,
                    fn,
                    stream=stream,
                    agent=agent_name,
                    table=self.table,
                    previous=previous.window if previous is not None else None,
                    wall_clock=wall_clock,
                    others={"batch": batch, "threaded": threaded, "periodic": periodic},
                )
                handler, stage_tables = windowed, stage_tables + (windowed.table,)
            spec = AgentSpec(
                name=agent_name,
                handler=handler,
                stream=stream,
                group=group or self.config.default_group,
                concurrency=concurrency,
                processes=processes,
                batch=batch or windowed is not None,
                config=consumer_config,
                threaded=threaded,
                output=output,
                tables=stage_tables,
                maxlen=self.config.stream_maxlen,
                periodic=hook,
                window=windowed,
            )
            self._work.check_process_budget(spec)
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
            key = handler_name(fn, name)
            # the counters carry over a re-registration (a re-run timer cell), as an agent's do
            spec = TimerSpec(name=key, handler=fn, config=config, stats=self._timer_stats.setdefault(key, TimerStats()))
            replaced = spec.name in self._timers
            self._timers[spec.name] = spec
            if self._state == "running" or spec.name in self._timer_runners:
                self._in_loop(self._work.swap_timer(spec))
                if replaced:
                    log.info("timer %s replaced", spec.name)
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
                self._in_loop(self._work.swap_agent(key, None))
        else:
            del self._timers[key]
            self._work.stop_timer(key)

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

    def _register_agent(self, spec: AgentSpec) -> None:
        replaced = spec.name in self._agents
        self._agents[spec.name] = spec
        self._stats.setdefault(spec.name, AgentStats())
        if self._state == "running" or spec.name in self._runners:
            self._in_loop(self._work.swap_agent(spec.name, spec))
            if replaced:
                log.info("agent %s replaced; its consumers hand over (pending entries carry over)", spec.name)
        # while "starting", startup() picks it up when it finishes; while "stopping", the next start does

    def _in_loop(self, coro: Coroutine[Any, Any, None]) -> None:
        loop = self._loop
        assert loop is not None, "only called once the app has started"
        if running_loop() is loop:
            task = loop.create_task(coro)
            task.add_done_callback(_log_task_error)
        else:
            asyncio.run_coroutine_threadsafe(coro, loop)

    # -- lifecycle -----------------------------------------------------------

    def _handled(self) -> int:  # what run(count=...) counts
        return sum(s.processed + s.dead_lettered + s.skipped for s in self._stats.values())

    def use_server(self, url: str) -> None:
        """Point a stopped App at another Redis (the test harness does); the next start connects there."""
        if self._state not in STOPPED_STATES:
            raise AppStateError(f"app {self.name!r} is {self._state}: stop it before changing its server")
        self._redis = RedisConnection(url=url, settings=self.settings)
        self._work.connection = self._redis  # the agents' runners connect through it

    async def startup(self) -> None:
        """Connect, create the groups, run the startup hooks, start agents and timers (``start()`` calls it)."""
        if self._state not in STOPPED_STATES:
            raise AppStateError(f"app {self.name!r} is already {self._state}")
        predecessor, self._predecessor = self._predecessor, None
        if predecessor is not None:  # the App this one replaced: its consumers hand over their names
            try:
                await predecessor
            except Exception as exc:
                log.warning("app %r: the app it replaces did not stop cleanly: %s", self.name, exc)
        self._state = "starting"
        self._loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        try:
            await self._work.open(self._startup_hooks, lambda: self.storage)
        except BaseException:
            self._state = "running"  # so that shutdown() releases what did start
            try:
                await self.shutdown()
            finally:
                self._state = "failed"
            raise
        self._state = "running"
        await self._work.start_missing()  # what cells registered while the hooks and runners started
        await self._start_companions(self._make_companions())
        log.info(
            "app %s running: %d agents, %d timers on %s",
            self.name,
            len(self._agents),
            len(self._timers),
            self._redis.safe_url,
        )

    async def shutdown(self) -> None:
        """Stop timers and agents (in-flight work finishes within the grace period), run hooks, close.

        While another shutdown is under way, waits for it (a runner must not return and close its loop
        under a shutdown started elsewhere, e.g. by ``app.stop()`` in a handler)."""
        if self._state == "stopping" and self._shut_down is not None:
            await self._shut_down.wait()
        if self._state in STOPPED_STATES or self._state == "stopping":
            return
        self._state = "stopping"
        self._shut_down = asyncio.Event()
        grace = self.config.grace_seconds
        try:
            await self._stop_companions()
            await self._work.stop(grace)
            for hook in self._shutdown_hooks:
                try:
                    await hook()
                except Exception:
                    log.exception("on_shutdown hook %r failed", hook)
        finally:
            self._work.clear()
            await self._redis.close()
            self._state = "stopped"
            self._shut_down.set()
            if self._stopped is not None:
                self._stopped.set()

    # -- the instances registry and the web dashboard ---------------------------

    def enable_dashboard(self, port: Optional[int] = None) -> None:
        """Run for the web dashboard of this Redis while the app runs (one per Redis is elected; from the
        next start on). ImportError (naming the extra) or ConfigError (a bind beyond loopback without a token)."""
        from streammachine.dashboard import check_bind, check_port, require_extra

        require_extra()
        check_bind(self.settings.dashboard_host, self.settings.dashboard_token)
        self.dashboard_port = check_port(self.settings.dashboard_port if port is None else port)
        self.dashboard_enabled = True

    def _make_companions(self) -> list:
        from streammachine.engine.instances import InstanceHeartbeat

        self.instance = InstanceHeartbeat.for_app(self)  # None when STREAMMACHINE_HEARTBEAT_SECONDS=0
        self.dashboard_candidate = None
        if self.dashboard_enabled:
            from streammachine.dashboard.candidate import DashboardCandidate

            self.dashboard_candidate = DashboardCandidate.for_app(self)
        return [companion for companion in (self.instance, self.dashboard_candidate) if companion is not None]

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
        active, expected = self._work.counts()
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

    def status_now(self, groups: Optional[Groups] = None, redis_up: Optional[bool] = None) -> AppStatus:
        """The status of every agent and timer from what is in hand (``groups``: fetched by the caller); no I/O."""
        agents = {name: (spec, self._stats.setdefault(name, AgentStats())) for name, spec in self._agents.items()}
        running = set(self._runners) | set(self._timer_runners)
        return app_status(self.name, self._state, self._redis.safe_url, agents, self._timers, running, groups, redis_up)

    async def status(self) -> AppStatus:
        """Per agent: counters, rate, and (while running, from Redis) pending, lag and consumers of its group;
        a Redis that does not answer shows as ``redis_up=False`` (the metrics report it as down)."""
        if self._state != "running":
            return self.status_now()
        try:
            client = await self._redis.get_client()
            groups = await fetch_groups(client, [s.stream for s in self._agents.values()], strict=True)
        except Exception as exc:  # an outage is part of the status (redis_up False), not an error
            log.debug("app %s: status without Redis: %s", self.name, exc)
            return self.status_now(redis_up=False)
        return self.status_now(groups, redis_up=True)

    def stats(self, name: str) -> AgentStats:
        return self._stats[self._resolve_name(name)]

    def dashboard(self):
        """An ipywidgets panel of agents, rates, pending, lag and errors (needs the notebook extras)."""
        from streammachine.notebook.dashboard import Dashboard

        return Dashboard(self)

    def __repr__(self) -> str:
        return f"App({self.name!r}, state={self._state}, agents={len(self._agents)}, timers={len(self._timers)})"

    def _repr_html_(self) -> str:  # a notebook shows `app` as its status table (counters only: no I/O here)
        from streammachine.engine.status import status_html

        return status_html(repr(self), self.status_now().rows())


def _log_task_error(task: asyncio.Future) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("streammachine background task failed", exc_info=task.exception())
