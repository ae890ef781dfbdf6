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
        self._loop: Optional[asyncio.AbstractEventLoop] = None

    def __enter__(self) -> StopSignals:
        self._loop = asyncio.get_running_loop()
        if self.worker:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        for sig in self.handled:
            self._loop.add_signal_handler(sig, self._on_signal, sig)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._loop is not None and not self._loop.is_closed():
            for sig in self.handled:
                self._loop.remove_signal_handler(sig)
        self._loop = None

    def _on_signal(self, sig: signal.Signals) -> None:
        self.received.append(sig)
        if len(self.received) == 1:
            log.info("%s: received %s: stopping (work in hand finishes and is acknowledged)", self.who, sig.name)
            self.on_stop(sig)
        else:
            log.warning("%s: received %s again: exiting at once", self.who, sig.name)
            self.on_repeat(sig)
