"""A live view of a stage's table (``app.table``): its committed rows as an HTML table, redrawn as commits land.

The view shows what this process holds as committed (the values Redis
confirmed for this process's commits, plus what it loaded or refreshed),
never a handler's writes in progress. It redraws only when that changed:
``Table.revision`` moves with every change, so a quiet table costs one
integer comparison per frame whatever its size.
"""

from __future__ import annotations

import html
import time
from typing import Any, Dict, Hashable, Optional

import ipywidgets as widgets
import pandas as pd

from streammachine.notebook.refresh import LiveView, check_positive


class LiveTable(LiveView):
    """The first ``max_rows`` keys of ``table`` (sorted by key), with a header naming the table and its size.

    ``frame`` is the DataFrame on screen (the same shape as
    ``table.to_dataframe()``: dict values spread into columns, anything else
    in a ``value`` column).
    """

    source_attribute = "table"

    def __init__(self, table: Any, *, fps: float = 2, max_rows: int = 50, title: Optional[str] = None) -> None:
        if not hasattr(table, "revision") or not hasattr(table, "committed_version"):
            raise TypeError(f"live_table({table!r:.80}): expected a table from app.table(name)")
        if isinstance(max_rows, bool) or not isinstance(max_rows, int):
            raise ValueError(f"max_rows={max_rows!r}: expected an int > 0")
        check_positive("max_rows", max_rows)
        self.table = table
        self.max_rows = max_rows
        self.title = title or table.name
        self.frame = pd.DataFrame()
        self.keys = 0  # how many keys the table held at the last redraw
        self.header = widgets.HTML()
        self.body = widgets.HTML()
        super().__init__(widgets.VBox([self.header, self.body]), fps)

    def _version(self) -> Hashable:
        # keys with a TTL leave without a commit: such a table is also looked at again every second
        return self.table.revision, (int(time.time()) if self.table.ttl_ms else None)

    def _render(self) -> None:
        keys = sorted(self.table.keys())
        rows: Dict[str, Any] = {}
        for key in keys[: self.max_rows]:
            found, value = self.table.committed_get(key)
            if found:
                rows[key] = value
        self.keys = len(keys)
        self.frame = rows_frame(rows)
        shown = f" &middot; first {len(rows)} by key" if len(keys) > len(rows) else ""
        self.header.value = f"<b>{html.escape(self.title)}</b> &middot; {len(keys)} keys{shown}"
        if rows:
            self.body.value = self.frame.to_html(border=0, classes="streammachine-table")
        else:
            self.body.value = "<i>no keys yet</i>"


def rows_frame(rows: Dict[str, Any]) -> pd.DataFrame:
    """``rows`` (key -> value) as ``Table.to_dataframe()`` shapes a table."""
    if rows and all(isinstance(v, dict) for v in rows.values()):
        return pd.DataFrame.from_dict(rows, orient="index").rename_axis("key")
    return pd.DataFrame({"value": pd.Series(rows, dtype=object)}).rename_axis("key")


def live_table(table: Any, *, fps: float = 2, max_rows: int = 50, title: Optional[str] = None) -> LiveTable:
    """A live view of a stage's table (display it: it is the widget); ``close()`` stops it.

    >>> totals = app.table("totals", default=0)
    >>> live_table(totals, max_rows=20)
    """
    view = LiveTable(table, fps=fps, max_rows=max_rows, title=title)
    view.refresh()  # something to show at once, even for an empty table
    view.start()
    return view
