"""A live view's ties to the notebook: the cell that made it, and the variable holding what it watches.

Re-running a chart cell makes a new view; the old one would go on redrawing
in the background, unseen. Views are registered under the cell that created
them (JupyterLab's ``cellId``, else the cell's source), and the views an
earlier run of that cell made are stopped when the new run makes one.

Re-running the cell that creates a buffer (with the agent that fills it)
binds its variable to a new buffer while the chart still holds the old, no
longer filled one. A view remembers the user-namespace names that held its
source when it started; when none of them holds it any more, it follows the
object now bound there if that is of the same kind, and otherwise says that
it is stale.
"""

from __future__ import annotations

import hashlib
import weakref
from typing import Any, Dict, List, Optional, Tuple

_MISSING = object()
_by_cell: Dict[str, Tuple[Any, weakref.WeakSet[Any]]] = {}


def _shell() -> Any:
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - the notebook extra brings IPython
        return None
    return get_ipython()


def current_cell() -> Optional[Tuple[str, Any]]:
    """(which cell, which run of it) for the cell executing now; None outside IPython."""
    shell = _shell()
    if shell is None:
        return None
    kernel = getattr(shell, "kernel", None)
    parent: dict = {}
    if kernel is not None:
        try:
            parent = kernel.get_parent() or {}
        except (AttributeError, TypeError):
            parent = getattr(kernel, "_parent_header", {}) or {}
    cell_id = (parent.get("metadata") or {}).get("cellId")
    run = (parent.get("header") or {}).get("msg_id") or shell.execution_count
    if cell_id:
        return f"id:{cell_id}", run
    history = shell.user_ns.get("_ih") or [""]
    return "source:" + hashlib.sha1(history[-1].encode()).hexdigest(), run


def replace_earlier_views(view: Any) -> List[Any]:
    """Register ``view`` under the running cell; stop (and return) the views an earlier run of it made."""
    cell = current_cell()
    if cell is None:
        return []
    key, run = cell
    earlier_run, views = _by_cell.get(key, (None, weakref.WeakSet()))
    replaced: List[Any] = []
    if earlier_run != run:
        replaced = [old for old in list(views) if old is not view and old.running]
        for old in replaced:
            old.stop()
        views = weakref.WeakSet()
        _by_cell[key] = (run, views)
    views.add(view)
    return replaced


def names_holding(value: Any) -> Tuple[str, ...]:
    """The user-namespace names bound to ``value`` (``buffer``, ``agg``, ``app``), hidden ones left out."""
    shell = _shell()
    if shell is None or value is None:
        return ()
    return tuple(name for name, bound in list(shell.user_ns.items()) if bound is value and not name.startswith("_"))


def rebound(names: Tuple[str, ...], value: Any) -> Tuple[Optional[str], Any]:
    """(None, value) while one of ``names`` still holds ``value``; else (the first name, what it holds now)."""
    shell = _shell()
    if shell is None or not names:
        return None, value
    namespace = shell.user_ns
    now = [namespace.get(name, _MISSING) for name in names]
    if any(bound is value for bound in now):
        return None, value
    return names[0], (None if now[0] is _MISSING else now[0])
