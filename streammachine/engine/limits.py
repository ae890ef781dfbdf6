"""The open-file budget: checked once when an App starts, not discovered as failures under load.

Every consumer has a client of its own (up to ``CONNECTIONS_PER_CONSUMER``
sockets: the read and the keep-alive of slow entries), beside the App's
pool. 600 agents with concurrency 2 need some 2,400 descriptors; past the
soft RLIMIT_NOFILE every new connection fails with EMFILE and entries go to
the dead-letter stream while health says "healthy". So the App counts what
it will open: when that exceeds the soft limit it raises the soft limit (up
to the hard one), and when even the hard limit is too low it refuses to
start, naming the numbers.
"""

from __future__ import annotations

import logging
import os
from typing import Iterable, Optional, Tuple

from streammachine.engine.specs import AgentSpec

log = logging.getLogger("streammachine.engine.limits")

CONNECTIONS_PER_CONSUMER = 2  # engine.executors gives each consumer a client of max_connections=2
WORKER_DESCRIPTORS = 2  # what a forked worker costs its parent (a pipe and the process sentinel)
RESERVE = 64  # files, pipes, the event loop, the Manager, the metrics server, a notebook's own sockets


class OpenFilesLimitError(OSError):
    """The open-file limit (RLIMIT_NOFILE) is below what the App's consumers need, and cannot be raised."""


def descriptors_needed(agents: Iterable[AgentSpec], pool_size: int) -> Tuple[int, str]:
    """(descriptors this process will open for Redis at most, how that was counted)."""
    agents = list(agents)
    consumers = sum(spec.concurrency for spec in agents if not spec.processes)
    workers = sum(spec.processes or 0 for spec in agents)
    here = consumers * CONNECTIONS_PER_CONSUMER + pool_size + workers * WORKER_DESCRIPTORS
    # a forked worker inherits this limit and opens its own consumers' connections
    per_worker = max((spec.concurrency * CONNECTIONS_PER_CONSUMER for spec in agents if spec.processes), default=0)
    how = f"{consumers} consumers x {CONNECTIONS_PER_CONSUMER} connections + a pool of {pool_size}"
    if workers:
        how += f" + {workers} worker processes"
    return max(here, per_worker), how


def _open_now() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))  # Linux: exact
    except OSError:
        return 0  # elsewhere: RESERVE has to cover what is open


def ensure_open_files(agents: Iterable[AgentSpec], pool_size: int, app: str = "app") -> Optional[int]:
    """Make room for the App's connections under RLIMIT_NOFILE; returns the soft limit in force (None: no limit).

    Raises OpenFilesLimitError, naming the numbers, when the hard limit is too low.
    """
    try:
        import resource
    except ImportError:  # not POSIX: no such limit to check
        return None
    redis_descriptors, how = descriptors_needed(agents, pool_size)
    already_open = _open_now()
    needed = redis_descriptors + RESERVE + already_open
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or needed <= soft:
        return None if soft == resource.RLIM_INFINITY else soft
    if hard == resource.RLIM_INFINITY or needed <= hard:
        raised = needed if hard == resource.RLIM_INFINITY else min(hard, max(needed, 2 * soft))
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
        except (ValueError, OSError) as exc:
            log.warning("app %s: could not raise the open-file limit from %d to %d (%s)", app, soft, raised, exc)
        else:
            log.info(
                "app %s: raised the open-file limit (RLIMIT_NOFILE) from %d to %d for %d connections (%s)",
                app,
                soft,
                raised,
                redis_descriptors,
                how,
            )
            return raised
    raise OpenFilesLimitError(
        f"app {app!r} needs about {needed} open files ({how} = {redis_descriptors}, {already_open} already open, "
        f"{RESERVE} in reserve) but the open-file limit is {soft} (hard limit {hard}); raise it "
        f"(ulimit -n {needed}, or LimitNOFILE={needed} for a systemd service) or run fewer consumers per process "
        "(lower concurrency, or processes=N / --workers N to spread them)"
    )
