"""Windowed aggregations over streams: any field, any key, event time, crash-safe state.

::

    from streammachine.windows import VWAP, Count, Mean, Window

    window = Window.tumbling(60_000, key="symbol", grace_ms=2_000).agg(n=Count(), vwap=VWAP("price", "qty"))
    state = window.start()                      # compiled core when built, else pure Python
    for row in state.add_entries(reply):        # rows of the windows that closed
        ...
    saved = state.snapshot()                    # JSON-able; state.restore(saved) takes it back

See ``spec.py`` for the window kinds and the time rules, ``aggregates.py``
for the aggregates, ``state.py`` for the input paths.
"""

from streammachine.windows.aggregates import (
    OHLC,
    VWAP,
    Aggregate,
    Count,
    First,
    Last,
    Max,
    Mean,
    Min,
    Reduce,
    Std,
    Sum,
    Var,
)
from streammachine.windows.candles import candle_from_row
from streammachine.windows.spec import Window
from streammachine.windows.state import (
    Columns,
    CythonWindowState,
    PythonWindowState,
    Rows,
    window_state_class,
)
from streammachine.windows.values import Rejected

__all__ = [
    "Window",
    "Aggregate",
    "Count",
    "Sum",
    "Mean",
    "Min",
    "Max",
    "First",
    "Last",
    "Var",
    "Std",
    "VWAP",
    "OHLC",
    "Reduce",
    "Rows",
    "Columns",
    "Rejected",
    "PythonWindowState",
    "CythonWindowState",
    "window_state_class",
    "candle_from_row",
]
