"""StreamMachine in Jupyter: magics, live plotly views, the app dashboard.

Nothing here is imported by ``import streammachine``; the names below load
their module (and plotly/ipywidgets/IPython) on first use.
"""
from importlib import import_module

_LAZY = {
    "LiveView": "refresh",
    "LiveLine": "live",
    "live_line": "live",
    "LiveCandles": "candles",
    "live_candles": "candles",
    "Dashboard": "dashboard",
    "until": "waiting",
    "load_ipython_extension": "magics",
}

__all__ = list(_LAZY)


def __getattr__(name):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'streammachine.notebook' has no attribute {name!r}")
    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value
