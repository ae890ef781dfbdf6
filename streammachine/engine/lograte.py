"""Rate-limited failure logs: the first failure at once, then one summary line per key per interval.

A handler bug on a fast stream fails hundreds of times a second; a log line
for each one floods terminals and freezes notebook pages (every line becomes
cell output). Failures are recorded here under a key (``"agent orders"``,
``"timer tick"``): the first one of a quiet key is logged as it was, with its
traceback when one is given; those that follow within the interval are
counted, and one line per interval reports how many, of which kind, and the
last error. Every record carries ``failures`` (how many failures it stands
for), so the counts of the lines add up to the failures that happened.

The interval is ``Settings.failure_log_interval`` (``STREAMMACHINE_FAILURE_LOG_INTERVAL``,
seconds; 0 logs every failure).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Dict, Optional


@dataclass
class _Window:
    ends: float
    suppressed: int = 0
    kinds: Dict[str, int] = field(default_factory=dict)
    level: int = logging.NOTSET
    last: str = ""
    flush: Optional[asyncio.TimerHandle] = None


class FailureLog:
    """Aggregates the failure lines of one logger by key; see the module docstring."""

    def __init__(self, logger: logging.Logger, interval: Optional[float] = None) -> None:
        self.logger = logger
        self._interval = interval
        self._windows: Dict[str, _Window] = {}
        self._lock = threading.Lock()

    @property
    def interval(self) -> float:
        if self._interval is not None:
            return self._interval
        from streammachine.config import Settings

        return Settings.current().failure_log_interval

    def record(self, key: str, level: int, kind: str, message: str, *args: Any, exc_info: Any = None) -> None:
        """One failure under ``key`` (``kind``: e.g. "retried", "dead-lettered"); ``message % args`` says what."""
        now = time.monotonic()
        with self._lock:
            window = self._windows.get(key)
            if window is not None and window.suppressed and now >= window.ends:
                self._flush_locked(key, window, now)  # no loop to run the scheduled flush: do it on the way
                window = self._windows.get(key)
            if window is None or (not window.suppressed and now >= window.ends):
                interval = self.interval
                if interval > 0:
                    self._windows[key] = _Window(ends=now + interval)
                self._emit(level, f"{key}: {message}", args, 1, exc_info)
                return
            window.suppressed += 1
            window.kinds[kind] = window.kinds.get(kind, 0) + 1
            window.level = max(window.level, level)
            window.last = message % args if args else message
            if window.flush is None:
                window.flush = self._schedule(window.ends - now, key)

    def flush(self, key: Optional[str] = None) -> None:
        """Log the summary of what is counted now (all keys, or ``key``) and forget them: on stop, so no count
        is lost and the first failure after a restart is logged at once."""
        now = time.monotonic()
        with self._lock:
            for name in [key] if key is not None else list(self._windows):
                window = self._windows.get(name)
                if window is not None and window.suppressed:
                    self._flush_locked(name, window, now)
                closed = self._windows.pop(name, None)
                if closed is not None and closed.flush is not None:
                    closed.flush.cancel()

    def _due(self, key: str) -> None:
        with self._lock:
            window = self._windows.get(key)
            if window is not None:
                window.flush = None
                if window.suppressed:
                    self._flush_locked(key, window, time.monotonic())

    def _flush_locked(self, key: str, window: _Window, now: float) -> None:
        if window.flush is not None:
            window.flush.cancel()
        kinds = ", ".join(f"{kind} {count}" for kind, count in window.kinds.items())
        interval = self.interval
        self._emit(
            window.level,
            f"{key}: {window.suppressed} more failure(s) in the last {interval:g}s ({kinds}); last: {window.last}",
            (),
            window.suppressed,
            None,
        )
        # the summary opens the next window: a steady failure rate gives one line per interval
        self._windows[key] = _Window(ends=now + interval)

    def _schedule(self, delay: float, key: str) -> Optional[asyncio.TimerHandle]:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return None
        return loop.call_later(max(delay, 0.0), self._due, key)

    def _emit(self, level: int, message: str, args: tuple, failures: int, exc_info: Any) -> None:
        self.logger.log(level, message, *args, exc_info=exc_info, extra={"failures": failures})
