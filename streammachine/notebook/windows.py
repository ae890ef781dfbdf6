"""A live chart of a window stage's rows (``@app.agent(..., window=...)``): a line or bars per key.

The rows are the ones the window emitted in this process (``WindowStage.rows()``:
the latest row per window, a bounded number of them). The view looks the
agent up by name on every frame, so re-running the cell that defines the
window (a hot swap: the new handler keeps the window's state and its rows)
keeps the chart going. It redraws only when new rows came (the stage's
``revision``), at most ``fps`` times a second.
"""

from __future__ import annotations

from typing import Any, Hashable, List, Optional, Sequence, Union

import ipywidgets as widgets
import pandas as pd
import plotly.graph_objects as go

from streammachine.notebook.refresh import LiveView, check_positive

KINDS = ("line", "bars")


def window_stage(source: Any, agent: Optional[str] = None) -> Any:
    """The WindowStage of ``agent`` in the App ``source`` (full or short name), or ``source`` itself."""
    if agent is None:
        if not hasattr(source, "rows") or not hasattr(source, "revision"):
            raise TypeError(f"live_window({source!r:.80}): expected an App and an agent name, or a window stage")
        return source
    specs = source.agents
    matches = [s for name, s in specs.items() if agent in (name, name.rsplit(".", 1)[-1])]
    if len(matches) != 1:
        raise KeyError(f"no single agent {agent!r} among {sorted(specs)}")
    if matches[0].window is None:
        raise ValueError(f"agent {agent!r} has no window: register it with @app.agent(..., window=Window...)")
    return matches[0].window


class LiveWindow(LiveView):
    """Column ``y`` of a window's rows against each window's end, one trace per key (``keys``: which ones)."""

    def __init__(
        self,
        source: Any,
        agent: Optional[str],
        y: str,
        *,
        kind: str = "line",
        keys: Union[None, str, Sequence[str]] = None,
        window: int = 500,
        fps: float = 5,
        title: Optional[str] = None,
        height: int = 350,
    ) -> None:
        if kind not in KINDS:
            raise ValueError(f"kind={kind!r}: expected one of {KINDS}")
        if not isinstance(y, str) or not y:
            raise ValueError(f"y={y!r}: expected the name of one of the window's columns")
        check_positive("window", window)
        self.source, self.agent, self.y, self.kind = source, agent, y, kind
        stage = window_stage(source, agent)
        if y not in stage.window.columns:
            raise ValueError(f"y={y!r}: not a column of the window (columns: {list(stage.window.columns)})")
        self.keys: Optional[List[str]] = [keys] if isinstance(keys, str) else None if keys is None else list(keys)
        self.window = int(window)
        self.frame = pd.DataFrame()
        self.figure = go.FigureWidget(
            layout=go.Layout(
                title=dict(text=title or f"{agent or 'window'}: {y}"),
                height=height,
                margin=dict(l=50, r=10, t=40, b=40),
                uirevision="keep",
                barmode="group",
            )
        )
        super().__init__(widgets.VBox([self.figure]), fps)

    def _version(self) -> Hashable:
        stage = window_stage(self.source, self.agent)
        return id(stage), stage.revision

    def _render(self) -> None:
        rows = window_stage(self.source, self.agent).rows()
        frame = pd.DataFrame(rows[-self.window * 4 :] if rows else [], columns=["key", "start", "end", self.y])
        if self.keys is not None:
            frame = frame[frame["key"].isin(self.keys)]
        self.frame = frame = frame.sort_values(["key", "end"]).groupby("key").tail(self.window)
        keys = list(dict.fromkeys(frame["key"]))
        trace = go.Bar if self.kind == "bars" else go.Scatter
        with self.figure.batch_update():
            if [t.name for t in self.figure.data] != keys:
                self.figure.data = ()
                for key in keys:
                    self.figure.add_trace(trace(name=key) if self.kind == "bars" else trace(name=key, mode="lines"))
            for item, key in zip(self.figure.data, keys):
                part = frame[frame["key"] == key]
                item.x = pd.to_datetime(part["end"].to_numpy(dtype="int64"), unit="ms").to_numpy()
                item.y = part[self.y].to_numpy()


def live_window(
    source: Any,
    agent: Optional[str] = None,
    y: Optional[str] = None,
    *,
    kind: str = "line",
    keys: Union[None, str, Sequence[str]] = None,
    window: int = 500,
    fps: float = 5,
    title: Optional[str] = None,
    height: int = 350,
) -> LiveWindow:
    """A live chart of a window agent's rows (display it: it is the figure); ``close()`` stops it.

    >>> live_window(app, "vwap", y="vwap")                  # a line per key, the last 500 windows each
    >>> live_window(app, "volume", y="qty", kind="bars", keys=["AAPL", "MSFT"])
    """
    if y is None:
        raise ValueError("live_window: y= names the column to plot (one of the window's aggregates)")
    view = LiveWindow(
        source, agent, y, kind=kind, keys=keys, window=window, fps=fps, title=title, height=height
    )  # fmt: skip
    view.refresh()
    return view.start()
