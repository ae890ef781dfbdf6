"""Running a target's App headless: ``streammachine run``.

One worker (the default) runs the app in this process on uvloop. SIGINT or
SIGTERM stops it gracefully: consumers stop reading, handlers in hand finish
within the app's grace period and are acknowledged, timers stop, pools
close; the exit code is 0. A second signal exits at once (code 128+signal).

``--workers N`` (N > 1) makes this process a supervisor of N worker
processes, each started fresh (``python -m streammachine run TARGET
--worker-index I``) so each imports the target on its own, with its own
event loop and connections:

- all workers join the same consumer groups, so Redis splits each stream's
  entries between them; consumer names stay distinct (they carry the
  worker's pid, or ``$STREAMMACHINE_CONSUMER_NAME-wI`` when that is set);
- timers run only in worker 0, so a producer timer fires once per interval,
  not N times;
- SIGINT/SIGTERM to the supervisor becomes SIGTERM to every worker (workers
  ignore the terminal's SIGINT and wait for it), which then stop gracefully;
  workers still running after the grace period (+5 s) are killed;
- a worker that dies is restarted; a worker that cannot load the target
  (exit 2), or dies three times within seconds of starting, stops the run;
- workers write metric snapshots to a private directory; the supervisor
  serves their sum on ``--metrics-port``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import Optional

from streammachine._redact import redact_url
from streammachine._validate import check_positive
from streammachine.config import Settings
from streammachine.headless.metrics import (
    SNAPSHOT_INTERVAL,
    DirectorySource,
    LiveSource,
    serve_metrics,
    snapshot,
    write_snapshot,
)
from streammachine.headless.targets import load_app, parse_target

log = logging.getLogger("streammachine.headless.run")

EXIT_OK, EXIT_FAILURE, EXIT_TARGET = 0, 1, 2
FAST_FAILURE_SECONDS = 5.0
MAX_FAST_FAILURES = 3


@dataclass(frozen=True)
class RunOptions:
    target: str
    workers: int = 1
    metrics_port: Optional[int] = None
    metrics_host: str = "127.0.0.1"
    log_level: str = "INFO"
    worker_index: Optional[int] = None  # set in the worker processes of a supervisor
    stats_dir: Optional[str] = None  # where a worker writes its metric snapshots

    def __post_init__(self) -> None:
        check_positive("workers", self.workers, integer=True, expected="an integer >= 1")
        if self.metrics_port is not None and not 0 <= self.metrics_port <= 65535:
            raise ValueError(f"metrics_port={self.metrics_port!r}: expected a TCP port 0-65535")


def run(options: RunOptions, settings: Optional[Settings] = None) -> int:
    """Run the target until a signal; returns the process exit code."""
    if options.workers > 1 and options.worker_index is None:
        parse_target(options.target)  # a missing file fails here, not N times in the workers
        return Supervisor(options, settings or Settings.from_env()).run()
    try:
        import uvloop

        return uvloop.run(serve(options))
    except ImportError:
        return asyncio.run(serve(options))


async def serve(options: RunOptions) -> int:
    """Load the app, start it, wait for a signal (or the app stopping), shut it down."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    worker_mode = options.worker_index is not None
    received: list = []

    who = f"worker {options.worker_index}" if worker_mode else "runner"

    def on_signal(sig: signal.Signals) -> None:
        received.append(sig)
        if len(received) == 1:
            log.info("%s: received %s: stopping (work in hand finishes and is acknowledged)", who, sig.name)
            stop.set()
        else:
            log.warning("%s: received %s again: exiting at once", who, sig.name)
            os._exit(128 + sig)

    if worker_mode:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor decides, via SIGTERM
        handled = (signal.SIGTERM,)
    else:
        handled = (signal.SIGINT, signal.SIGTERM)
    for sig in handled:
        loop.add_signal_handler(sig, on_signal, sig)

    app = await load_app(options.target)
    index = options.worker_index or 0
    if index > 0:
        for name in list(app.timers):  # timers run once, in worker 0
            app.unregister(name)
    metrics = None
    if options.metrics_port is not None and not worker_mode:
        metrics = serve_metrics(LiveSource(app, loop), options.metrics_port, options.metrics_host)
    writer = loop.create_task(_write_snapshots(app, index, options.stats_dir)) if options.stats_dir else None
    parent = os.getppid()
    try:
        if app.state == "stopped":
            log.info(
                "the target stopped app %r while loading (a notebook's last cell?); starting it to serve", app.name
            )
        if app.state in ("idle", "stopped"):
            await app.startup()
        while app.state == "starting":  # the target started it itself (App.start() at import)
            await asyncio.sleep(0.05)
        if worker_mode:
            log.info(
                "worker %d (pid %d): app %r running, %d agents, %d timers",
                index,
                os.getpid(),
                app.name,
                len(app.agents),
                len(app.timers),
            )
        while not stop.is_set() and app.state == "running":
            if worker_mode and os.getppid() != parent:
                log.warning("worker %d: supervisor is gone; stopping", index)
                break
            try:
                await asyncio.wait_for(stop.wait(), timeout=0.5)
            except asyncio.TimeoutError:
                pass
    finally:
        await app.shutdown()
        if writer is not None:
            writer.cancel()
            write_snapshot(options.stats_dir, await snapshot(app, str(index)))
        if metrics is not None:
            metrics.shutdown()
        for sig in handled:
            loop.remove_signal_handler(sig)
    log.info("%s: app %r stopped", who, app.name)
    return EXIT_OK


async def _write_snapshots(app, index: int, directory: str) -> None:
    while True:
        try:
            write_snapshot(directory, await snapshot(app, str(index)))
        except OSError as exc:
            log.debug("metrics snapshot not written: %s", exc)
        await asyncio.sleep(SNAPSHOT_INTERVAL)


class Supervisor:
    """Starts, watches, restarts and stops the worker processes of ``--workers N``."""

    def __init__(self, options: RunOptions, settings: Settings) -> None:
        self.options, self.settings = options, settings
        self.procs: dict[int, subprocess.Popen] = {}
        self.started: dict[int, float] = {}
        self.fast_failures: dict[int, int] = {}
        self.wake = threading.Event()
        self.signals: list = []
        self.stats_dir: Optional[str] = None

    def command(self, index: int) -> list:
        opts = self.options
        cmd = [
            sys.executable,
            "-m",
            "streammachine",
            "--log-level",
            opts.log_level,
            "run",
            opts.target,
            "--workers",
            str(opts.workers),
            "--worker-index",
            str(index),
        ]
        if self.stats_dir:
            cmd += ["--stats-dir", self.stats_dir]
        return cmd

    def spawn(self, index: int) -> None:
        env = dict(os.environ)
        if self.settings.consumer_name:
            env["STREAMMACHINE_CONSUMER_NAME"] = f"{self.settings.consumer_name}-w{index}"
        self.procs[index] = subprocess.Popen(self.command(index), env=env, stdin=subprocess.DEVNULL)
        self.started[index] = time.monotonic()
        log.info("worker %d started (pid %d)", index, self.procs[index].pid)

    def _on_signal(self, signum, _frame) -> None:
        self.signals.append(signum)
        self.wake.set()

    def run(self) -> int:
        opts = self.options
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        metrics = None
        try:
            if opts.metrics_port is not None:
                self.stats_dir = tempfile.mkdtemp(prefix="streammachine-metrics-")
                metrics = serve_metrics(DirectorySource(self.stats_dir), opts.metrics_port, opts.metrics_host)
            for index in range(opts.workers):
                self.spawn(index)
            log.info("supervising %d workers of %s on %s", opts.workers, opts.target, self._safe_url())
            code = self._watch()
            return self._stop_all(code)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            if metrics is not None:
                metrics.shutdown()
            if self.stats_dir:
                shutil.rmtree(self.stats_dir, ignore_errors=True)

    def _safe_url(self) -> str:
        url = self.settings.redis_url
        return redact_url(url) if url else "the default server"

    def _watch(self) -> Optional[int]:
        """Until a signal (returns None) or a fatal worker failure (returns its exit code)."""
        while not self.signals:
            self.wake.wait(0.1)
            self.wake.clear()
            for index, proc in list(self.procs.items()):
                code = proc.poll()
                if code is None or self.signals:
                    continue
                if code == EXIT_TARGET:
                    log.error("worker %d could not load %s (exit %d); stopping", index, self.options.target, code)
                    return EXIT_TARGET
                quick = time.monotonic() - self.started[index] < FAST_FAILURE_SECONDS
                self.fast_failures[index] = self.fast_failures.get(index, 0) + 1 if quick else 0
                if self.fast_failures[index] >= MAX_FAST_FAILURES:
                    log.error(
                        "worker %d exited %d times within %.0fs of starting (last exit %d); stopping",
                        index,
                        MAX_FAST_FAILURES,
                        FAST_FAILURE_SECONDS,
                        code,
                    )
                    return EXIT_FAILURE
                log.warning("worker %d (pid %d) exited with %d; restarting it", index, proc.pid, code)
                self.spawn(index)
        log.info("received %s: stopping %d workers", signal.Signals(self.signals[0]).name, len(self.procs))
        return None

    def _grace(self) -> float:
        grace = self.settings.grace_seconds
        if self.stats_dir:
            grace = max([grace] + [s.get("grace_seconds", 0) for s in DirectorySource(self.stats_dir)()])
        return grace + 5.0

    def _stop_all(self, code: Optional[int]) -> int:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self._grace()
        failed = False
        for index, proc in self.procs.items():
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("worker %d (pid %d) did not stop within the grace period; killing it", index, proc.pid)
                proc.kill()
                proc.wait()
            failed = failed or proc.returncode != 0
        if code is not None:
            return code
        return EXIT_FAILURE if failed else EXIT_OK
