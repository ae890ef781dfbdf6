"""``streammachine run --workers N``: the supervisor of N worker interpreters.

Each worker is started fresh (``python -m streammachine run TARGET
--worker-index I``), so it imports the target on its own, with its own
event loop and connections. Spawning, restarting and stopping are the
supervision core's (engine/supervision.py); what is particular here:

- the worker's command line and environment (the Redis URL the supervisor
  resolved, a consumer name per worker when one is configured);
- exit code 2 (the target cannot be loaded, or the worker refuses to run
  it) stops the run at once, as do three exits in a row before running;
- one Manager process holds the workers' shared ``"manager"`` storage (as
  an App's does for its ``processes=N`` workers), so ``app.storage`` is one
  store, not N;
- SIGINT/SIGTERM becomes SIGTERM to every worker; a second signal sends a
  second SIGTERM (workers then exit at once) and the supervisor follows;
- with ``--metrics-port``, workers write snapshots to a private directory
  and the supervisor serves their sum.
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
from typing import List, Optional

from streammachine._redact import redact_url
from streammachine.config import Settings
from streammachine.engine import loop as event_loop
from streammachine.engine.supervision import WorkerPool
from streammachine.headless.metrics import DirectorySource, serve_metrics
from streammachine.headless.options import EXIT_FAILURE, EXIT_OK, EXIT_TARGET, RunOptions
from streammachine.state.manager import StoreManager, locator, start_manager

log = logging.getLogger("streammachine.headless.supervisor")


class Supervisor(WorkerPool):
    """Starts, watches, restarts and stops the worker processes of ``--workers N``."""

    def __init__(self, options: RunOptions, settings: Settings) -> None:
        super().__init__(options.workers, "supervisor", fatal_codes={EXIT_TARGET})
        self.options, self.settings = options, settings
        self.stats_dir: Optional[str] = None
        self.hurried: Optional[signal.Signals] = None
        self.storage: Optional[StoreManager] = None  # the workers' shared "manager" storage

    def command(self, index: int, ready_fd: int) -> List[str]:
        opts = self.options
        cmd = [sys.executable, "-m", "streammachine", "--log-level", opts.log_level, "run", opts.target]
        cmd += ["--workers", str(opts.workers), "--worker-index", str(index)]
        cmd += ["--ready-fd", str(ready_fd), "--supervisor-pid", str(os.getpid())]
        if self.stats_dir:
            cmd += ["--stats-dir", self.stats_dir]
        if opts.dashboard_port is not None:
            cmd += ["--dashboard-port", str(opts.dashboard_port)]
        return cmd

    def launch(self, index: int, ready_fd: int) -> subprocess.Popen:
        name = self.settings.consumer_name
        env = self.settings.child_environment(
            consumer_name=f"{name}-w{index}" if name else None,
            storage_manager=locator(self.storage) if self.storage is not None else None,
        )
        process = subprocess.Popen(
            self.command(index, ready_fd), env=env, stdin=subprocess.DEVNULL, pass_fds=(ready_fd,)
        )
        log.info("worker %d started (pid %d)", index, process.pid)
        return process

    def run(self) -> int:
        return event_loop.run(self._run())

    async def _run(self) -> int:
        opts = self.options
        stop = asyncio.Event()
        metrics = None
        with event_loop.StopSignals(lambda _sig: stop.set(), who="supervisor", on_repeat=self._hurry) as signals:
            try:
                if opts.metrics_port is not None:
                    self.stats_dir = tempfile.mkdtemp(prefix="streammachine-metrics-")
                    metrics = serve_metrics(DirectorySource(self.stats_dir), opts.metrics_port, opts.metrics_host)
                # one "manager" store for every worker, as processes=N workers share their App's
                self.storage = await asyncio.to_thread(start_manager)
                self.spawn_all()
                log.info("supervising %d workers of %s on %s", opts.workers, opts.target, self._safe_url())
                failed = await self.watch(stop)
                if failed is None:
                    log.info("received %s: stopping %d workers", signals.received[0].name, len(self.slots))
                elif failed.exit_code == EXIT_TARGET:
                    log.error("worker %d could not load or run %s (exit 2); stopping", failed.index, opts.target)
                else:
                    log.error("%s; stopping", failed.given_up)
                codes = await self.stop_all(self._grace())
            finally:
                if self.storage is not None:
                    self.storage.shutdown()
                if metrics is not None:
                    metrics.shutdown()
                if self.stats_dir:
                    shutil.rmtree(self.stats_dir, ignore_errors=True)
        if self.hurried is not None:
            return 128 + self.hurried
        if failed is not None:
            return EXIT_TARGET if failed.exit_code == EXIT_TARGET else EXIT_FAILURE
        return EXIT_FAILURE if any(code != 0 for code in codes.values()) else EXIT_OK

    def _hurry(self, sig: signal.Signals) -> None:
        """A second signal: a second SIGTERM makes every worker exit at once; the supervisor follows."""
        self.hurried = sig
        self.signal_all(signal.SIGTERM)

    def _safe_url(self) -> str:
        url = self.settings.redis_url
        return redact_url(url) if url else "the default server"

    def _grace(self) -> float:
        grace = self.settings.grace_seconds
        if self.stats_dir:
            grace = max([grace] + [s.get("grace_seconds", 0) for s in DirectorySource(self.stats_dir)()])
        return grace + 5.0
