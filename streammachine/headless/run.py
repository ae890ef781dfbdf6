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
  (exit 2), or exits three times in a row before it was running, stops the
  run (headless/supervisor.py, on the supervision core of engine/supervision.py);
- workers write metric snapshots to a private directory; the supervisor
  serves their sum on ``--metrics-port``.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Optional

from streammachine.config import Settings
from streammachine.engine import loop as event_loop
from streammachine.engine.supervision import parent_alive, report_ready
from streammachine.headless.metrics import (
    SNAPSHOT_INTERVAL,
    LiveSource,
    serve_metrics,
    snapshot,
    write_snapshot,
)
from streammachine.headless.options import EXIT_OK, RunOptions
from streammachine.headless.supervisor import Supervisor
from streammachine.headless.targets import load_app, parse_target

log = logging.getLogger("streammachine.headless.run")


def run(options: RunOptions, settings: Optional[Settings] = None) -> int:
    """Run the target until a signal; returns the process exit code."""
    if options.workers > 1 and options.worker_index is None:
        parse_target(options.target)  # a missing file fails here, not N times in the workers
        return Supervisor(options, settings or Settings.current()).run()
    return event_loop.run(serve(options, settings))


async def serve(options: RunOptions, settings: Optional[Settings] = None) -> int:
    """Load the app, start it, wait for a signal (or the app stopping), shut it down.

    ``settings`` (``--redis-url`` included) are in force while the target loads and runs:
    an ``App()`` it creates without settings of its own takes them.
    """
    stop = asyncio.Event()
    worker_mode = options.worker_index is not None
    who = f"worker {options.worker_index}" if worker_mode else "runner"
    with (settings or Settings.current()).use():
        with event_loop.StopSignals(lambda _sig: stop.set(), who=who, worker=worker_mode):
            return await _serve(options, stop, who)


async def _serve(options: RunOptions, stop: asyncio.Event, who: str) -> int:
    loop = asyncio.get_running_loop()
    worker_mode = options.worker_index is not None
    app = await load_app(options.target)
    index = options.worker_index or 0
    app.worker_index = options.worker_index
    if options.dashboard_port is not None:
        app.enable_dashboard(options.dashboard_port)
    if index > 0:
        for name in list(app.timers):  # timers run once, in worker 0
            app.unregister(name)
    metrics = None
    if options.metrics_port is not None and not worker_mode:
        metrics = serve_metrics(LiveSource(app, loop), options.metrics_port, options.metrics_host)
    writer = loop.create_task(_write_snapshots(app, index, options.stats_dir)) if options.stats_dir else None
    try:
        if app.state == "stopped":
            log.info(
                "the target stopped app %r while loading (a notebook's last cell?); starting it to serve", app.name
            )
        await app.ensure_running()  # the target may have started it itself (a notebook's app.start())
        report_ready(options.ready_fd)
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
            if not parent_alive(options.supervisor_pid):
                log.warning("worker %d: supervisor is gone; stopping", index)
                break
            try:
                await asyncio.wait_for(stop.wait(), timeout=0.5)
            except asyncio.TimeoutError:
                pass
    finally:
        await app.shutdown()
        if writer is not None and options.stats_dir is not None:
            writer.cancel()
            write_snapshot(options.stats_dir, await snapshot(app, str(index)))
        if metrics is not None:
            metrics.shutdown()
    log.info("%s: app %r stopped", who, app.name)
    return EXIT_OK


async def _write_snapshots(app, index: int, directory: str) -> None:
    while True:
        try:
            write_snapshot(directory, await snapshot(app, str(index)))
        except OSError as exc:
            log.debug("metrics snapshot not written: %s", exc)
        await asyncio.sleep(SNAPSHOT_INTERVAL)
