"""``app.dashboard()``: an ipywidgets panel of agents, throughput, pending, lag and errors.

A header (app, state, server), a table (one row per agent and timer) and a
throughput chart (messages/s per agent over the last ``history`` samples).
It polls the App's counters and, while the app runs, its groups' pending
and lag from Redis, on the kernel loop, ``fps`` times a second at most.
"""

from __future__ import annotations

import datetime as dt
import html
from collections import deque
from typing import Deque, Dict, Hashable, List, Tuple

import ipywidgets as widgets
import plotly.graph_objects as go

from streammachine.notebook.refresh import LiveView, check_positive
from streammachine.notebook.status import status_frame


class Dashboard(LiveView):
    """Live status of one App. ``Dashboard(app)`` starts refreshing when a loop is running."""

    source_attribute = "app"

    def __init__(self, app, *, fps: float = 2.0, history: int = 120, height: int = 260) -> None:
        check_positive("history", history)
        self.app = app
        self.history = int(history)
        self.header = widgets.HTML()
        self.table = widgets.HTML()
        self.chart = go.FigureWidget(
            layout=go.Layout(
                height=height,
                margin=dict(l=40, r=10, t=30, b=30),
                title=dict(text="throughput (msg/s)"),
                showlegend=True,
                uirevision="keep",  # keep the user's zoom across redraws
            )
        )
        super().__init__(widgets.VBox([self.header, self.table, self.chart]), fps)
        self.rows: List[dict] = []
        self._rates: Dict[str, Deque[Tuple[dt.datetime, float]]] = {}
        self._polls = 0
        self._render_rows()  # something to show before the first poll
        self.start()

    async def _poll(self) -> None:
        self.rows = (await self.app.status()).rows()
        self._polls += 1
        now = dt.datetime.now()
        for row in self.rows:
            if row["kind"] == "agent":
                self._rates.setdefault(row["name"], deque(maxlen=self.history)).append((now, row["rate"]))

    def _version(self) -> Hashable:
        # the chart moves on every poll while the app runs; a stopped app redraws only on change
        moving = self._polls if self.app.is_running else None
        return moving, self.app.state, tuple(tuple(row.values()) for row in self.rows)

    def _render(self) -> None:
        self._render_rows()
        names = [name for name in self._rates if name in self.app.agents]
        with self.chart.batch_update():
            if [trace.name for trace in self.chart.data] != names:
                self.chart.data = ()
                self.chart.add_traces([go.Scatter(name=name, mode="lines") for name in names])
            for trace, name in zip(self.chart.data, names):
                samples = self._rates[name]
                trace.x = [t for t, _ in samples]
                trace.y = [r for _, r in samples]

    def _render_rows(self) -> None:
        app = self.app
        self.header.value = (
            f"<b>{html.escape(app.name)}</b> &middot; {html.escape(app.state)} &middot; "
            f"{html.escape(app.redis.safe_url)} &middot; {len(app.agents)} agents, {len(app.timers)} timers"
        )
        if self.rows:
            frame = status_frame(self.rows)
            self.table.value = frame.to_html(na_rep="", border=0, classes="streammachine-status")
        else:
            self.table.value = "<i>no agents or timers registered</i>"
