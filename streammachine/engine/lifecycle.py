"""The lifecycle of an App: ``start()``/``stop()`` in call order, and the ``Transition`` they return.

``Transition`` is one type for every place the calls are made:

- in a running event loop (a notebook cell, an async program) the call
  returns at once and the transition runs on the loop: ``await`` the handle
  to wait for it (``await app.start()`` raises what made startup fail);
- with no running loop, the call blocks (``start()`` until the app stopped,
  ``stop()`` until it has stopped) and returns a handle that is already done;
- a call that has nothing to do (``stop()`` on a stopped app) returns a done
  handle too, so ``await app.stop()`` always works.

A failure nobody awaited or asked about is logged once, as one line.

``Lifecycle`` (the App's base class) orders the calls: each start or stop
runs on the app's loop after the one called before it, so ``app.stop();
app.start()`` in one cell restarts the app, and starting a running app
does nothing and says so.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import gc
import logging
import signal
import time
from typing import Any, Callable, Coroutine, Generator, List, Optional, Protocol, Union

from streammachine.config import Settings
from streammachine.engine import loop as event_loop

log = logging.getLogger("streammachine.app")

STOPPED_STATES = ("idle", "stopped", "failed")
ACTIVE_STATES = ("starting", "running", "stopping")

AnyFuture = Union["asyncio.Future[str]", "concurrent.futures.Future[str]"]


class Transition:
    """A start or stop of an App: awaitable, done when the app reached ``result()`` (its state then).

    ``describe()`` gives the app's one-line status for the repr (a notebook
    shows it when the call ends a cell).
    """

    def __init__(self, future: Optional[AnyFuture], what: str, describe: Callable[[], str], note: str = "") -> None:
        self._future = future
        self.what = what  # "start" or "stop"
        self.note = note  # why nothing was done, when nothing was
        self._describe = describe
        self._observed = False
        if future is not None:
            future.add_done_callback(self._report_unobserved)

    @classmethod
    def done_already(cls, what: str, describe: Callable[[], str], state: str, note: str = "") -> Transition:
        future: concurrent.futures.Future[str] = concurrent.futures.Future()
        future.set_result(state)
        return cls(future, what, describe, note)

    # -- the outcome -----------------------------------------------------------

    def done(self) -> bool:
        return self._future is None or self._future.done()

    def result(self) -> str:
        """The state the app reached; raises what made the transition fail (both only once done)."""
        self._observed = True
        if self._future is None:
            raise asyncio.InvalidStateError("no outcome")
        return self._future.result() if isinstance(self._future, concurrent.futures.Future) else self._future.result()

    def exception(self) -> Optional[BaseException]:
        self._observed = True
        return None if self._future is None else self._future.exception()

    def wait(self, timeout: Optional[float] = None) -> str:
        """Block until done (from a thread that does not run the app's loop); returns ``result()``."""
        self._observed = True
        future = self._future
        if isinstance(future, asyncio.Future):
            future = _threadsafe(future)
        assert future is not None
        return future.result(timeout)

    def add_done_callback(self, fn: Callable[[Transition], None]) -> None:
        """Call ``fn(self)`` once done (at once when done already); ``fn`` counts as observing the outcome."""
        self._observed = True
        if self._future is None:
            fn(self)
        else:
            self._future.add_done_callback(lambda _future: fn(self))

    def __await__(self) -> Generator[Any, None, str]:
        self._observed = True
        future = self._future
        assert future is not None
        if isinstance(future, concurrent.futures.Future):
            return (yield from asyncio.wrap_future(future).__await__())
        if future.get_loop() is not asyncio.get_running_loop():
            return (yield from asyncio.wrap_future(_threadsafe(future)).__await__())
        return (yield from asyncio.shield(future).__await__())

    # -- display -----------------------------------------------------------------

    def __repr__(self) -> str:
        if self.note:
            return f"<{self._describe()}: {self.note}>"
        if not self.done():
            return f"<{self._describe()}: {self.what} in progress>"
        error = None if self._future is None or self._future.cancelled() else self._future.exception()
        if error is not None:
            return f"<{self._describe()}: {self.what} failed: {type(error).__name__}: {error}>"
        return f"<{self._describe()}>"

    def _report_unobserved(self, future: AnyFuture) -> None:
        if future.cancelled() or future.exception() is None:
            return

        def report() -> None:  # a moment later: an `await` of this handle has observed it by then
            if not self._observed:
                error = future.exception()
                log.error("%s: %s failed: %s: %s", self._describe(), self.what, type(error).__name__, error)

        try:
            asyncio.get_running_loop().call_soon(report)
        except RuntimeError:  # completed in another thread with no loop: report now
            report()


def _threadsafe(future: asyncio.Future) -> concurrent.futures.Future:
    """A concurrent Future that follows ``future`` (which lives on another loop)."""
    mirror: concurrent.futures.Future = concurrent.futures.Future()

    def copy(source: asyncio.Future) -> None:
        if source.cancelled():
            mirror.cancel()
        elif source.exception() is not None:
            mirror.set_exception(source.exception())
        else:
            mirror.set_result(source.result())

    future.get_loop().call_soon_threadsafe(future.add_done_callback, copy)
    return mirror


def running_loop() -> Optional[asyncio.AbstractEventLoop]:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class Companion(Protocol):
    """Something that runs beside an app while it runs: the registry heartbeat, a dashboard candidate."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class Lifecycle:
    """start/stop/run for a class that provides ``startup()`` and ``shutdown()`` (the App).

    Companions (``_start_companions``/``_stop_companions``, called by ``startup()`` once the app
    runs and first thing in ``shutdown()``) observe the app; one that fails is logged, and the
    app runs on without it.
    """

    name: str
    settings: Settings
    _state: str  # idle -> starting -> running (or failed) -> stopping -> stopped
    _loop: Optional[asyncio.AbstractEventLoop]  # set by startup(): the loop the app runs on
    _stopped: Optional[asyncio.Event]  # set by shutdown()
    _pending: Optional[asyncio.Task] = None  # the last start/stop scheduled on _loop

    _companions: List[Companion] = []

    async def startup(self) -> None:
        raise NotImplementedError

    async def _start_companions(self, companions: List[Companion]) -> None:
        self._companions = []
        for companion in companions:
            try:
                await companion.start()
            except Exception as exc:
                log.error(
                    "app %r: %s did not start: %s: %s", self.name, type(companion).__name__, type(exc).__name__, exc
                )
                continue
            self._companions.append(companion)

    async def _stop_companions(self) -> None:
        companions, self._companions = self._companions, []
        for companion in reversed(companions):
            try:
                await companion.stop()
            except Exception as exc:
                log.warning("app %r: %s did not stop cleanly: %s", self.name, type(companion).__name__, exc)

    async def shutdown(self) -> None:
        raise NotImplementedError

    @property
    def state(self) -> str:
        return self._state

    @property
    def is_running(self) -> bool:
        return self._state == "running"

    def _handled(self) -> int:
        """Entries handled so far (what a bounded ``run(count=...)`` counts)."""
        return 0

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

    async def ensure_running(self) -> None:
        """Start the app unless it runs or a start is under way, and wait for that start (raises why it failed).

        For code that owns the process and finds an app its target may have
        started already (``streammachine run``): no "already running" noise.
        """
        while self._state == "starting" and self._pending is None:  # a startup() awaited directly
            await asyncio.sleep(0.01)
        if self._state != "running" or self._pending is not None:
            loop = asyncio.get_running_loop()
            await Transition(self._chain(loop, "start", self._start_owned), "start", self._describe)

    def start(self) -> Transition:
        """Start the app; returns a ``Transition`` (awaitable, see engine/lifecycle.py).

        Inside a running event loop (a notebook cell): schedules the start on
        that loop and returns at once; the agents keep running between cells.
        ``await app.start()`` waits until the app runs, raising what made the
        start fail. Calls run in order: ``app.stop(); app.start()`` restarts.
        Starting a running app does nothing and says so.

        With no running loop (a script): runs the app on a new loop (uvloop
        when installed) and blocks until SIGINT/SIGTERM or ``stop()``; a second
        signal exits at once. Returns a done ``Transition`` once stopped.
        """
        loop = running_loop()
        if self._active_on_another_loop(loop):
            return self._nothing_to_do("start", f"already {self._state} on another event loop")
        if loop is None:
            event_loop.run(self._run_headless())
            return Transition.done_already("start", self._describe, self._state)
        if self._pending is None and self._state in ("starting", "running"):
            return self._nothing_to_do("start", f"already {self._state}; start() did nothing")
        return Transition(self._chain(loop, "start", self._start_step), "start", self._describe)

    def stop(self) -> Transition:
        """Shut down (in-flight work finishes within the grace period); returns a ``Transition``.

        Inside the app's loop: returns at once (``await app.stop()`` waits).
        From a thread with no running loop: blocks until stopped. On an app
        that is not running: a done ``Transition``, so awaiting it always works.
        """
        loop, app_loop = running_loop(), self._loop
        if app_loop is None or (self._state in STOPPED_STATES and self._pending is None):
            return Transition.done_already("stop", self._describe, self._state, note=f"not running ({self._state})")
        if loop is app_loop:
            return Transition(self._chain(loop, "stop", self._stop_step), "stop", self._describe)
        if not app_loop.is_running():
            log.warning("app %r: its event loop no longer runs; marking it stopped", self.name)
            self._state = "stopped"
            return Transition.done_already("stop", self._describe, self._state)
        future = asyncio.run_coroutine_threadsafe(self._chained("stop", self._stop_step), app_loop)
        transition = Transition(future, "stop", self._describe)
        if loop is None:
            transition.wait()
        return transition

    def _active_on_another_loop(self, loop: Optional[asyncio.AbstractEventLoop]) -> bool:
        app_loop = self._loop
        return self._state in ACTIVE_STATES and app_loop is not None and app_loop is not loop and app_loop.is_running()

    def _nothing_to_do(self, what: str, note: str) -> Transition:
        log.warning("app %r is %s", self.name, note)
        return Transition.done_already(what, self._describe, self._state, note=note)

    def _describe(self) -> str:
        return f"App {self.name!r} {self._state}"

    def _chain(
        self, loop: asyncio.AbstractEventLoop, what: str, step: Callable[[], Coroutine[Any, Any, str]]
    ) -> asyncio.Task:
        """Run ``step`` on ``loop`` after the start/stop scheduled before it (in the order of the calls)."""
        previous = self._pending if self._pending is not None and self._pending.get_loop() is loop else None

        async def in_order() -> str:
            if previous is not None and not previous.done():
                await asyncio.wait([previous])
            return await step()

        task = loop.create_task(in_order(), name=f"streammachine:{self.name}:{what}")
        self._pending = task
        task.add_done_callback(self._settled)
        return task

    async def _chained(self, what: str, step: Callable[[], Coroutine[Any, Any, str]]) -> str:
        return await asyncio.shield(self._chain(asyncio.get_running_loop(), what, step))

    def _settled(self, task: asyncio.Task) -> None:
        if self._pending is task:
            self._pending = None

    async def _start_owned(self) -> str:
        """A start on a loop the caller owns (``streammachine run``): quiet when already running, no gc.freeze()."""
        if self._state not in ("starting", "running"):
            await self.startup()
        return self._state

    async def _start_step(self) -> str:
        if self._state in ("starting", "running"):
            log.warning("app %r is already %s; start() did nothing", self.name, self._state)
            return self._state
        await self.startup()
        if self.settings.gc_freeze:
            # On a loop someone else runs (a notebook kernel's), objects alive now (imports, notebook
            # state) leave the cyclic GC's generations: full collections over them would otherwise
            # stall the kernel for 100+ ms under load.
            gc.freeze()
        return self._state

    async def _stop_step(self) -> str:
        while self._state == "starting":  # a startup() awaited directly, outside the chain
            await asyncio.sleep(0.01)
        await self.shutdown()
        return self._state

    async def _run_headless(self) -> None:
        with event_loop.StopSignals(self._request_stop, who=f"app {self.name!r}"):
            await self.run()

    def _request_stop(self, sig: signal.Signals) -> None:
        if self._stopped is not None:
            self._stopped.set()
