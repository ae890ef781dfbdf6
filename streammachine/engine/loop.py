"""The event loop of headless code and its stop signals, written once.

Used where StreamMachine owns the process: ``App.start()`` with no running
loop, ``streammachine run`` (one process, or the supervisor of ``--workers
N`` and each of its workers) and the forked workers of ``processes=N``.
Never used on a loop someone else owns, such as a notebook kernel's.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
from typing import Any, Callable, Coroutine, List, Optional, Tuple, TypeVar

log = logging.getLogger("streammachine.engine.loop")

T = TypeVar("T")
OnSignal = Callable[[signal.Signals], None]


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` to completion on a fresh event loop: uvloop where installed, else asyncio's own."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


def stuck_handler_threads() -> List[threading.Thread]:
    """Handler threads (``threaded=True``) still running: a handler that never returned."""
    return [t for t in threading.enumerate() if t.name.startswith("streammachine-") and t.is_alive()]


def exit_past_stuck_threads(code: int) -> None:
    """For a process this package owns (``streammachine run``): once shutdown finished, exit with ``code`` even
    when a handler thread never returned (the interpreter would wait for it forever at exit)."""
    stuck = stuck_handler_threads()
    if stuck:
        log.warning("%d handler thread(s) never returned (%s); exiting without them", len(stuck), stuck[0].name)
        logging.shutdown()
        os._exit(code)


def exit_at_once(sig: signal.Signals) -> None:
    """What a second stop signal does by default: leave now, with the shell's code for that signal."""
    os._exit(128 + sig)


class StopSignals:
    """SIGINT/SIGTERM on the running loop: the first asks ``on_stop`` to stop gracefully, a second
    calls ``on_repeat`` (default: exit at once with 128 + signal).

    ``worker=True`` is for a process whose parent decides when it stops: the
    terminal's Ctrl-C reaches the whole process group, so SIGINT is ignored
    and only the parent's SIGTERM counts.

    A context manager: the handlers are removed on exit (SIGINT stays ignored
    in a worker).
    """

    def __init__(
        self, on_stop: OnSignal, *, who: str = "", worker: bool = False, on_repeat: Optional[OnSignal] = None
    ) -> None:
        self.on_stop = on_stop
        self.on_repeat = on_repeat or exit_at_once
        self.who = who or f"process {os.getpid()}"
        self.worker = worker
        self.handled: Tuple[signal.Signals, ...] = (signal.SIGTERM,) if worker else (signal.SIGINT, signal.SIGTERM)
        self.received: List[signal.Signals] = []
        self._signals_seen = 0  # counted in the signal handler itself, so a busy loop cannot hide the second
        self._loop: Optional[asyncio.AbstractEventLoop] = None

    def __enter__(self) -> StopSignals:
        self._loop = asyncio.get_running_loop()
        if self.worker:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        # Python-level handlers, not loop.add_signal_handler: they run between bytecodes even while a sync handler
        # keeps the loop busy (a stuck inline handler), so a second signal still ends the process at once.
        self._previous = {sig: signal.signal(sig, self._on_os_signal) for sig in self.handled}
        return self

    def __exit__(self, *exc_info: object) -> None:
        for sig, previous in getattr(self, "_previous", {}).items():
            signal.signal(sig, previous)
        self._previous = {}
        self._loop = None

    def _on_os_signal(self, signum: int, _frame: Any) -> None:
        sig = signal.Signals(signum)
        self._signals_seen += 1
        if self._signals_seen > 1:  # the second: now, whatever the loop is doing
            self._on_signal(sig)
        elif self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._on_signal, sig)

    def _on_signal(self, sig: signal.Signals) -> None:
        self.received.append(sig)
        if len(self.received) == 1 and self._signals_seen <= 1:
            log.info("%s: received %s: stopping (work in hand finishes and is acknowledged)", self.who, sig.name)
            self.on_stop(sig)
        else:
            log.warning("%s: received %s again: exiting at once", self.who, sig.name)
            self.on_repeat(sig)
