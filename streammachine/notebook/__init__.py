"""StreamMachine in Jupyter: magics, live plotly views, a live view of a stage's table, a window's rows, the app dashboard.

Nothing here is imported by ``import streammachine``; the names below load
their module (and plotly/ipywidgets/IPython) on first use.
"""

from streammachine._lazy import lazy_getattr

_LAZY = {
    "LiveView": "refresh",
    "LiveLine": "live",
    "live_line": "live",
    "LiveStreamLine": "stream_line",
    "live_stream_line": "stream_line",
    "LiveCandles": "candles",
    "live_candles": "candles",
    "LiveTable": "tables",
    "live_table": "tables",
    "LiveWindow": "windows",
    "live_window": "windows",
    "Dashboard": "dashboard",
    "until": "waiting",
    "load_ipython_extension": "magics",
}

__all__ = list(_LAZY)


__getattr__ = lazy_getattr(__name__, _LAZY, globals())
