"""What ``streammachine run`` was asked to do, and the exit codes it answers with."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from streammachine._validate import check_positive

EXIT_OK, EXIT_FAILURE, EXIT_TARGET = 0, 1, 2  # stopped by a signal; failed; bad arguments or target


@dataclass(frozen=True)
class RunOptions:
    target: str
    workers: int = 1
    metrics_port: Optional[int] = None
    metrics_host: str = "127.0.0.1"
    dashboard_port: Optional[int] = None  # every worker runs for the dashboard; one is elected
    log_level: str = "INFO"
    worker_index: Optional[int] = None  # set in the worker processes of a supervisor
    stats_dir: Optional[str] = None  # where a worker writes its metric snapshots
    ready_fd: Optional[int] = None  # where a worker tells its supervisor that it runs
    supervisor_pid: Optional[int] = None  # a worker stops when this process is gone

    def __post_init__(self) -> None:
        check_positive("workers", self.workers, integer=True, expected="an integer >= 1")
        if self.metrics_port is not None and not 0 <= self.metrics_port <= 65535:
            raise ValueError(f"metrics_port={self.metrics_port!r}: expected a TCP port 0-65535")
