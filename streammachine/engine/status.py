"""The one status model: what an App reports about each agent and timer.

``App.status()`` returns an ``AppStatus``; the notebook's ``%streammachine
status`` table and ``app.dashboard()`` show its ``rows()``; the Prometheus
metrics of ``streammachine run`` are built from its ``as_dict()``. Counters
come from the agents' ``AgentStats`` and the timers' ``TimerStats``; pending,
lag and consumers from Redis (``redis/inspect.py``), or None when not asked
(a stopped app, a table drawn without a server).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Collection, Dict, List, Mapping, Optional, Tuple

from streammachine.engine.specs import AgentSpec, AgentStats, TimerSpec
from streammachine.redis.inspect import Groups

# The columns of a status table, in order (an agent and a timer share them; what a timer lacks is None).
COLUMNS = (
    "kind",
    "name",
    "stream",
    "group",
    "running",
    "processed",
    "rate",
    "pending",
    "lag",
    "failed",
    "dead_lettered",
    "last_error",
)


@dataclass(frozen=True)
class AgentStatus:
    name: str
    stream: str
    group: str
    running: bool  # its consumers (or worker processes) are up
    processed: int
    failed: int  # handler calls that raised
    retried: int
    dead_lettered: int
    skipped: int
    reconnects: int
    commit_retries: int  # a stage's commits refused (a table changed meanwhile) and handled again
    handler_seconds: float
    rate: float  # handled per second, over the last second or more
    last_error: Optional[str]
    pending: Optional[int]  # of the group, from Redis
    lag: Optional[int]
    consumers: Optional[int]
    kind: str = "agent"
    window: Optional[Dict[str, Any]] = None  # a window agent's: table, keys, late (committed), entries, rejected
    concurrency: int = 1  # consumer tasks (per worker process, when ``processes`` is set)
    processes: Optional[int] = None


@dataclass(frozen=True)
class TimerStatus:
    name: str
    interval: float
    running: bool
    runs: int
    failures: int
    last_error: Optional[str]
    kind: str = "timer"


@dataclass(frozen=True)
class AppStatus:
    app: str
    state: str
    server: str  # credentials redacted
    agents: Tuple[AgentStatus, ...]
    timers: Tuple[TimerStatus, ...]
    redis_up: Optional[bool] = None  # None: Redis was not asked

    def rows(self) -> List[Dict[str, Any]]:
        """One row per agent and timer, with the ``COLUMNS`` (a timer's runs count as processed)."""
        rows = []
        for agent in self.agents:
            rows.append({column: getattr(agent, column) for column in COLUMNS})
        for timer in self.timers:
            row = dict.fromkeys(COLUMNS)
            row.update(kind="timer", name=timer.name, running=timer.running, processed=timer.runs)
            row.update(failed=timer.failures, last_error=timer.last_error)
            rows.append(row)
        return rows

    def as_dict(self) -> Dict[str, Any]:
        """JSON-able: what a worker of ``streammachine run`` writes for the metrics."""
        return dataclasses.asdict(self)


def agent_status(spec: AgentSpec, stats: AgentStats, running: bool, groups: Groups) -> AgentStatus:
    group = groups.get((spec.stream, spec.group), {})
    return AgentStatus(
        name=spec.name,
        stream=spec.stream,
        group=spec.group,
        running=running,
        processed=stats.processed,
        failed=stats.failed,
        retried=stats.retried,
        dead_lettered=stats.dead_lettered,
        skipped=stats.skipped,
        reconnects=stats.reconnects,
        commit_retries=stats.commit_retries,
        handler_seconds=round(stats.handler_seconds, 6),
        rate=round(stats.rate(), 1),
        last_error=stats.last_error,
        pending=group.get("pending"),
        lag=group.get("lag"),
        consumers=group.get("consumers"),
        window=None if spec.window is None else spec.window.status(),
        concurrency=spec.concurrency,
        processes=spec.processes,
    )


def timer_status(spec: TimerSpec, running: bool) -> TimerStatus:
    stats = spec.stats
    return TimerStatus(
        name=spec.name,
        interval=float(spec.config.interval),
        running=running,
        runs=stats.runs,
        failures=stats.failures,
        last_error=stats.last_error,
    )


def app_status(
    app: str,
    state: str,
    server: str,
    agents: Mapping[str, Tuple[AgentSpec, AgentStats]],
    timers: Mapping[str, TimerSpec],
    running: Collection[str],
    groups: Optional[Groups] = None,
    redis_up: Optional[bool] = None,
) -> AppStatus:
    """The status of one App from its registry (``running``: the names of agents and timers that run)."""
    found = groups or {}
    return AppStatus(
        app=app,
        state=state,
        server=server,
        agents=tuple(agent_status(spec, stats, name in running, found) for name, (spec, stats) in agents.items()),
        timers=tuple(timer_status(spec, name in running) for name, spec in timers.items()),
        redis_up=redis_up,
    )


def status_html(title: str, rows: List[Dict[str, Any]]) -> str:
    """A small HTML table of ``rows`` under ``title`` (an App's ``_repr_html_``): blanks for what a row lacks."""
    import html

    def cell(value: Any) -> str:
        if value is None:
            return ""
        return html.escape(f"{value:.1f}" if isinstance(value, float) else str(value))

    head = "".join(f"<th>{column}</th>" for column in COLUMNS)
    body = "".join("<tr>" + "".join(f"<td>{cell(row.get(c))}</td>" for c in COLUMNS) + "</tr>" for row in rows)
    table = f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>" if rows else ""
    return f"<div><b>{html.escape(title)}</b>{table or ' &middot; no agents or timers'}</div>"
