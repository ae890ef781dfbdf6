"""The status table of ``%streammachine status`` and ``app.dashboard()``: ``AppStatus.rows()`` as a DataFrame.

The rows come from the one status model (engine/status.py), so the magic
(groups fetched with a sync client) and the dashboard (async, on the kernel
loop) show the same columns as ``App.status()`` and the metrics.
"""

from __future__ import annotations

from typing import List

from streammachine.engine.status import COLUMNS


def status_frame(rows: List[dict]):
    """The rows as a pandas DataFrame indexed by name (by app and name when rows carry an ``app``)."""
    import pandas as pd

    # object dtype: counts stay ints and absent values stay None (timers have no pending or lag)
    index = ["app", "name"] if rows and "app" in rows[0] else ["name"]
    columns = [c for c in index if c != "name"] + list(COLUMNS)
    return pd.DataFrame(rows, columns=columns, dtype=object).set_index(index)
