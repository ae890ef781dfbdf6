"""What gets registered: agent and timer specs, their names, their counters."""

from __future__ import annotations

import inspect
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Tuple

from streammachine._validate import check_positive
from streammachine.config import ConsumerConfig, TimerConfig
from streammachine.typed.handlers import check_handler


def handler_name(fn: Callable, name: Optional[str] = None) -> str:
    """Registration key: ``name=`` if given, else module + qualname (stable across cell re-runs)."""
    if name:
        return name
    return f"{getattr(fn, '__module__', None) or '__main__'}.{getattr(fn, '__qualname__', repr(fn))}"


def is_async_callable(fn: Callable) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(getattr(fn, "__call__", None))  # noqa: B004  (an instance with an async __call__)


@dataclass
class AgentStats:
    """Counters an agent's consumers update in place (cheap: plain ints)."""

    processed: int = 0
    failed: int = 0
    retried: int = 0
    dead_lettered: int = 0
    skipped: int = 0
    reconnects: int = 0
    commit_retries: int = 0  # a stage's commits refused (a table changed meanwhile) and handled again
    commit_failures: int = 0  # a stage's commits that failed (an error reply: nothing written, entries pending)
    handler_seconds: float = 0.0
    last_error: Optional[str] = None
    started_at: float = field(default_factory=time.time)
    _rate_mark: tuple = field(default=(0.0, 0), repr=False)
    _rate: float = field(default=0.0, repr=False)

    def record_error(self, exc: BaseException) -> None:
        self.failed += 1
        self.last_error = f"{type(exc).__name__}: {exc}"

    def rate(self, window: float = 1.0) -> float:
        """Messages per second over the last ``window`` seconds or more.

        Observers share one measurement that moves at most once a window,
        so a dashboard and a status call do not skew each other.
        """
        now = time.monotonic()
        mark_time, mark_count = self._rate_mark
        if not mark_time:
            elapsed = max(time.time() - self.started_at, 1e-9)
            self._rate = self.processed / elapsed
            self._rate_mark = (now, self.processed)
        elif now - mark_time >= window:
            self._rate = (self.processed - mark_count) / (now - mark_time)
            self._rate_mark = (now, self.processed)
        return self._rate

    def as_dict(self) -> dict:
        return {
            "processed": self.processed,
            "failed": self.failed,
            "retried": self.retried,
            "dead_lettered": self.dead_lettered,
            "skipped": self.skipped,
            "reconnects": self.reconnects,
            "commit_retries": self.commit_retries,
            "commit_failures": self.commit_failures,
            "handler_seconds": round(self.handler_seconds, 6),
            "last_error": self.last_error,
        }


@dataclass
class AgentSpec:
    name: str
    handler: Callable[..., Any]
    stream: str
    group: str
    concurrency: int = 1
    processes: Optional[int] = None
    batch: bool = False
    config: ConsumerConfig = field(default_factory=ConsumerConfig)
    threaded: bool = False
    output: Optional[str] = None  # where the handler's return value goes (a stage)
    tables: Tuple[Any, ...] = ()  # the tables its handler changes, committed with the ack (a stage)
    maxlen: Optional[int] = None  # approximate MAXLEN of what a stage writes
    # (seconds, hook): a stage's hook run every ``seconds`` in its consumer's task, its effects committed like
    # a handler's (e.g. completing the windows or candles of quiet keys by wall-clock time)
    periodic: Optional[Tuple[float, Callable[[], Any]]] = None
    window: Any = None  # a window agent's WindowStage (its handler): its state and status

    @property
    def is_stage(self) -> bool:
        return self.output is not None or bool(self.tables) or self.periodic is not None

    def __repr__(self) -> str:  # the dataclass repr runs to a screenful (config, handler address)
        extras = [f"{self.concurrency} consumers"] * (self.concurrency > 1) + ["batch"] * self.batch
        extras += [f"output {self.output!r}"] * (self.output is not None)
        more = f", {', '.join(extras)}" if extras else ""
        return f"<agent {self.name!r} on {self.stream!r} (group {self.group!r}{more})>"

    def __post_init__(self) -> None:
        if self.output is not None and (not isinstance(self.output, str) or not self.output):
            raise ValueError(f"agent {self.name!r}: output={self.output!r}, expected None or a non-empty str")
        self.tables = tuple(self.tables)
        if self.periodic is not None:
            seconds, hook = self.periodic
            try:
                check_positive("seconds", seconds)
                usable = callable(hook)
            except ValueError:
                usable = False
            if not usable:
                raise ValueError(f"agent {self.name!r}: periodic={self.periodic!r}, expected (seconds > 0, a callable)")
        for table in self.tables:
            if not hasattr(table, "committed_get"):
                raise TypeError(f"agent {self.name!r}: tables=[...{table!r}...]: expected tables from app.table()")
        if not isinstance(self.stream, str) or not self.stream:
            raise ValueError(f"agent {self.name!r}: stream={self.stream!r}, expected a non-empty str")
        if not isinstance(self.group, str) or not self.group:
            raise ValueError(f"agent {self.name!r}: group={self.group!r}, expected a non-empty str")
        check_positive(f"agent {self.name!r}: concurrency", self.concurrency, integer=True)
        check_positive(f"agent {self.name!r}: processes", self.processes, integer=True, optional=True)
        if not callable(self.handler):
            raise TypeError(f"agent {self.name!r}: handler {self.handler!r} is not callable")
        self.is_async = is_async_callable(self.handler)
        if self.threaded and self.is_async:
            raise ValueError(f"agent {self.name!r}: threaded=True is for sync (def) handlers; this one is async")
        check_handler(self.handler, batch=self.batch, name=self.name)  # typed messages (#15): fail at registration


@dataclass
class TimerStats:
    """A timer's counters; they outlive a re-registration of the timer, as an agent's do."""

    runs: int = 0
    failures: int = 0
    last_error: Optional[str] = None


@dataclass
class TimerSpec:
    name: str
    handler: Callable[..., Any]
    config: TimerConfig
    stats: TimerStats = field(default_factory=TimerStats)

    def __post_init__(self) -> None:
        if not callable(self.handler):
            raise TypeError(f"timer {self.name!r}: handler {self.handler!r} is not callable")
        self.is_async = is_async_callable(self.handler)

    def __repr__(self) -> str:
        return f"<timer {self.name!r} every {self.config.interval:g}s: {self.runs} runs, {self.failures} failed>"

    @property
    def runs(self) -> int:
        return self.stats.runs

    @property
    def failures(self) -> int:
        return self.stats.failures

    @property
    def last_error(self) -> Optional[str]:
        return self.stats.last_error
