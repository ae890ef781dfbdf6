"""Fixed-rate timers: no drift, no overlap, failures logged and survived."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import Optional

from streammachine.engine.failures import own_cancellation
from streammachine.engine.lograte import FailureLog
from streammachine.engine.specs import TimerSpec

log = logging.getLogger("streammachine.engine.timers")
failures = FailureLog(log)  # a timer failing at 100 Hz: one line per interval, with a count


class TimerRunner:
    """Runs ``spec.handler`` every ``interval`` seconds.

    Ticks are scheduled on a fixed grid (start + k * interval), so a slow
    run does not push later ones back; ticks missed while a run overran are
    skipped rather than run back to back, and a run never overlaps itself.
    """

    def __init__(self, spec: TimerSpec) -> None:
        self.spec = spec
        self._stopping = False
        self._running_handler = False
        self._task: Optional[asyncio.Task] = None
        self.restarts = 0

    def start(self) -> asyncio.Task:
        self._task = asyncio.get_running_loop().create_task(self.run(), name=f"streammachine-timer:{self.spec.name}")
        self._task.add_done_callback(self._ended)
        return self._task

    def _ended(self, task: asyncio.Task) -> None:
        """A timer task that ends while not stopped is a defect somewhere: say so loudly, start it again."""
        if self._stopping or task is not self._task:
            return
        error = None if task.cancelled() else task.exception()
        log.error("timer %s ended unexpectedly (%r); starting it again", self.spec.name, error, exc_info=error)
        self.restarts += 1
        self.start()

    @property
    def task(self) -> Optional[asyncio.Task]:
        return self._task

    def stop(self) -> None:
        """Stop after the run in progress; a timer waiting for its next tick stops at once."""
        self._stopping = True
        if not self._running_handler and self._task is not None and not self._task.done():
            self._task.cancel()

    async def run(self) -> None:
        interval = float(self.spec.config.interval)
        clock = time.monotonic
        origin = clock()
        tick = 0 if self.spec.config.run_immediately else 1
        try:
            while not self._stopping:
                due = origin + tick * interval
                delay = due - clock()
                if delay > 0:
                    await asyncio.sleep(delay)
                if self._stopping:
                    break
                await self._run_once()
                # next grid point strictly in the future: skips ticks an overrun swallowed
                tick = max(tick + 1, math.floor((clock() - origin) / interval) + 1)
        except asyncio.CancelledError:
            if not self._stopping:
                raise
        finally:
            failures.flush(f"timer {self.spec.name}")

    async def _run_once(self) -> None:
        self._running_handler = True
        try:
            result = self.spec.handler()
            if self.spec.is_async:
                await result
            self.spec.stats.runs += 1
        except asyncio.CancelledError as exc:
            if own_cancellation(self._stopping):
                raise
            self._failed(exc)  # the handler awaited something cancelled: a failed run, the timer goes on
        except Exception as exc:
            self._failed(exc)
        finally:
            self._running_handler = False

    def _failed(self, exc: BaseException) -> None:
        self.spec.stats.failures += 1
        self.spec.stats.last_error = f"{type(exc).__name__}: {exc}"
        failures.record(
            f"timer {self.spec.name}",
            logging.ERROR,
            "failed",
            "failed (%s: %s); it keeps its schedule",
            type(exc).__name__,
            exc,
            exc_info=exc,
        )
