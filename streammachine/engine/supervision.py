"""Worker processes spawned, watched, restarted and stopped: the one supervision core.

Two kinds of workers share it: the forked workers of an agent's
``processes=N`` (engine/executors.py: a fork runs the handlers as they were
defined, in a notebook too) and the fresh interpreters of ``streammachine run
--workers N`` (headless/run.py: each imports the target on its own). Each
kind says how to launch one worker; the rest is here.

Restart policy. A worker that exits is started again in its slot (so under
the same consumer names: it takes its own pending entries back). A worker
tells its parent once it runs (``ReadyPipe``); one that exits before that,
however long it tried, counts as an early exit, and ``max_early_exits`` of
them in a row in one slot mean it cannot start (a target that fails to load,
a server that accepts connections and never answers): the slot is given up.
An exit code in ``fatal_codes`` gives the slot up at once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from dataclasses import dataclass
from typing import Collection, Dict, List, Optional, Protocol

log = logging.getLogger("streammachine.engine.supervision")

MAX_EARLY_EXITS = 3
READY = b"R"


def report_ready(fd: Optional[int]) -> None:
    """In a worker: tell the parent it runs (``fd`` is the write end of its ``ReadyPipe``)."""
    if fd is None:
        return
    try:
        os.write(fd, READY)
        os.close(fd)
    except OSError as exc:  # the parent is gone: the worker notices and stops on its own
        log.debug("could not report ready on fd %d: %s", fd, exc)


def parent_alive(parent_pid: Optional[int]) -> bool:
    """In a worker: whether the process that started it still runs (a dead parent's children are re-parented)."""
    return parent_pid is None or os.getppid() == parent_pid


class ReadyPipe:
    """One worker's "I run" message to its parent: a byte on a pipe the worker inherits."""

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe()
        os.set_blocking(self.read_fd, False)
        self._ready = False

    def launched(self) -> None:
        """In the parent, once the worker holds its copy of the write end."""
        os.close(self.write_fd)

    def ready(self) -> bool:
        if not self._ready:
            try:
                self._ready = os.read(self.read_fd, 1) == READY
            except BlockingIOError:
                pass
        return self._ready

    def close(self) -> None:
        os.close(self.read_fd)


class WorkerProcess(Protocol):
    """What the core needs of a worker process (``subprocess.Popen`` has it; forks get an adapter)."""

    @property
    def pid(self) -> Optional[int]: ...

    def poll(self) -> Optional[int]: ...

    def kill(self) -> None: ...


@dataclass
class Slot:
    index: int
    process: WorkerProcess
    pipe: ReadyPipe
    running: bool = False  # the current process reported running
    early_exits: int = 0  # exits in a row before running
    exit_code: Optional[int] = None  # of the last process that exited
    given_up: Optional[str] = None  # why the slot is no longer restarted


class WorkerPool:
    """``size`` numbered workers under one restart policy. Subclasses implement ``launch``."""

    poll_interval = 0.2

    def __init__(
        self, size: int, what: str, *, max_early_exits: int = MAX_EARLY_EXITS, fatal_codes: Collection[int] = ()
    ) -> None:
        self.size, self.what = size, what
        self.max_early_exits = max_early_exits
        self.fatal_codes = frozenset(fatal_codes)
        self.slots: Dict[int, Slot] = {}
        self.restarts = 0

    def launch(self, index: int, ready_fd: int) -> WorkerProcess:
        """Start worker ``index``; it inherits ``ready_fd`` and calls ``report_ready(ready_fd)`` once it runs."""
        raise NotImplementedError

    # -- running ---------------------------------------------------------------

    def spawn(self, index: int) -> None:
        old = self.slots.get(index)
        pipe = ReadyPipe()
        try:
            process = self.launch(index, pipe.write_fd)
        finally:
            pipe.launched()
        if old is not None:
            old.pipe.close()
            self.slots[index] = Slot(index, process, pipe, early_exits=old.early_exits)
        else:
            self.slots[index] = Slot(index, process, pipe)
        log.debug("%s: worker %d started (pid %s)", self.what, index, process.pid)

    def spawn_all(self) -> None:
        for index in range(self.size):
            self.spawn(index)

    def check(self) -> List[Slot]:
        """One look at every worker: note who runs, restart who exited; returns the slots given up now."""
        given_up = []
        for slot in list(self.slots.values()):
            if slot.given_up is not None:
                continue
            if not slot.running and slot.pipe.ready():
                slot.running, slot.early_exits = True, 0
            code = slot.process.poll()
            if code is None:
                continue
            slot.exit_code = code
            slot.given_up = self._verdict(slot, code)
            if slot.given_up is not None:
                given_up.append(slot)
                continue
            log.warning(
                "%s: worker %d (pid %s) exited with %s; restarting it", self.what, slot.index, slot.process.pid, code
            )
            self.restarts += 1
            self.spawn(slot.index)
        return given_up

    def _verdict(self, slot: Slot, code: int) -> Optional[str]:
        """Why the slot is given up after its worker exited with ``code``; None to restart it."""
        if code in self.fatal_codes:
            return f"{self.what}: worker {slot.index} exited with {code}"
        if not slot.running:
            slot.early_exits += 1
            if slot.early_exits >= self.max_early_exits:
                return (
                    f"{self.what}: worker {slot.index} exited {slot.early_exits} times in a row before it was "
                    f"running (last exit {code})"
                )
        return None

    async def watch(self, stop: asyncio.Event) -> Optional[Slot]:
        """``check()`` until ``stop`` is set (returns None) or a slot is given up (returns it)."""
        while not stop.is_set():
            given_up = self.check()
            if given_up:
                return given_up[0]
            try:
                await asyncio.wait_for(stop.wait(), self.poll_interval)
            except asyncio.TimeoutError:
                pass
        return None

    @property
    def pids(self) -> List[int]:
        return [s.process.pid for s in self.slots.values() if s.process.pid is not None and s.process.poll() is None]

    def signal_all(self, sig: signal.Signals) -> None:
        for slot in self.slots.values():
            pid = slot.process.pid
            if pid is not None and slot.process.poll() is None:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass

    async def stop_all(self, grace: float) -> Dict[int, Optional[int]]:
        """SIGTERM every worker, wait up to ``grace`` seconds, kill the late ones; returns exit codes by slot."""
        self.signal_all(signal.SIGTERM)
        deadline = time.monotonic() + grace
        while any(s.process.poll() is None for s in self.slots.values()) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        for slot in self.slots.values():
            if slot.process.poll() is None:
                log.warning(
                    "%s: worker %d (pid %s) did not stop within %.1fs; killing it",
                    self.what,
                    slot.index,
                    slot.process.pid,
                    grace,
                )
                slot.process.kill()
        while any(s.process.poll() is None for s in self.slots.values()):
            await asyncio.sleep(0.02)
        codes = {index: slot.process.poll() for index, slot in self.slots.items()}
        for slot in self.slots.values():
            slot.pipe.close()
        self.slots = {}
        return codes
