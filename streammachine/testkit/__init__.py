"""Testing pipelines on real servers: the ``Harness``, fault helpers and the pytest plugin.

Public through ``streammachine.testing``.
"""

from streammachine.testkit.faults import (
    Ledger,
    Producer,
    kill_consumer,
    restart_agent,
    restart_server,
    seq_of,
    stall_server,
    stalled,
)
from streammachine.testkit.harness import FAST, DrainTimeout, Harness

__all__ = [
    "FAST",
    "DrainTimeout",
    "Harness",
    "Ledger",
    "Producer",
    "kill_consumer",
    "restart_agent",
    "restart_server",
    "seq_of",
    "stall_server",
    "stalled",
]
