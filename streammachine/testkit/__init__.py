"""Testing pipelines on real servers: the ``Harness``, fault helpers and the pytest plugin.

Public through ``streammachine.testing``, which lists these names from here
(``__all__``): importing either package stays light, the submodules (and the
App behind them) are imported when a name is first used.
"""

from streammachine._lazy import lazy_getattr

_LAZY = {
    "FAST": "harness",
    "DrainTimeout": "harness",
    "Harness": "harness",
    "Ledger": "faults",
    "Producer": "faults",
    "kill_consumer": "faults",
    "restart_agent": "faults",
    "restart_server": "faults",
    "seq_of": "faults",
    "stall_server": "faults",
    "stalled": "faults",
}

__all__ = list(_LAZY)

__getattr__ = lazy_getattr(__name__, _LAZY, globals())
