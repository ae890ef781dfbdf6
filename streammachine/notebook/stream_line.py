"""The lighter line chart: an anywidget view that sends only new points and extends its traces in the browser.

``live_line`` (a plotly ``FigureWidget``) replaces its arrays every frame:
plotly's Python side has no ``extendTraces``. ``live_stream_line`` keeps the
figure in the browser (plotly.js ``Plotly.extendTraces``) and sends each
frame only the rows that arrived since the last one, downsampled (min/max per
bucket) to the density of ``max_points`` per ``window``; the browser keeps
the last ``max_points`` points per line and shows the last ``window`` of
time. A view (re)shown in the browser asks for the whole window once.

plotly.js comes from the page when plotly's own renderer loaded it, else
from the kernel (the copy in the plotly package, once per page): no network.
"""

from __future__ import annotations

import json
from typing import Any, Hashable, List, Optional, Sequence, Union

import anywidget
import numpy as np
import traitlets

from streammachine.data.downsample import minmax_indices
from streammachine.notebook.live import Window, window_span
from streammachine.notebook.refresh import LiveView

_ESM = """
function plotlyFrom(model) {
  if (window.Plotly) return Promise.resolve(window.Plotly);
  if (!window.__streammachinePlotly) {
    window.__streammachinePlotly = new Promise((resolve, reject) => {
      const got = (msg, buffers) => {
        if (msg.type !== "plotly") return;
        model.off("msg:custom", got);
        const script = document.createElement("script");
        script.src = URL.createObjectURL(new Blob([buffers[0]], { type: "text/javascript" }));
        script.onload = () => resolve(window.Plotly);
        script.onerror = reject;
        document.head.appendChild(script);
      };
      model.on("msg:custom", got);
      model.send({ type: "plotly" });
    });
  }
  return window.__streammachinePlotly;
}

async function render({ model, el }) {
  const plot = document.createElement("div");
  plot.className = "streammachine-stream-line";
  plot.style.height = model.get("height") + "px";
  el.appendChild(plot);
  const Plotly = await plotlyFrom(model);
  const names = model.get("names");
  const layout = {
    title: { text: model.get("title") }, margin: { l: 50, r: 10, t: 40, b: 40 },
    xaxis: { type: model.get("time_axis") ? "date" : "linear" }, uirevision: "keep",
  };
  const traces = (xs, ys) => names.map((name, i) => ({ x: xs[i], y: ys[i], name, mode: "lines", type: "scatter" }));
  await Plotly.newPlot(plot, traces(names.map(() => []), names.map(() => [])), layout, { responsive: true });
  const onMessage = (msg) => {
    if (msg.type === "reset") Plotly.react(plot, traces(msg.x, msg.y), layout);
    else if (msg.type === "extend") Plotly.extendTraces(plot, { x: msg.x, y: msg.y }, names.map((_, i) => i), msg.keep);
    else return;
    if (msg.range) Plotly.relayout(plot, { "xaxis.range": msg.range });
    plot.dataset.frames = String(Number(plot.dataset.frames || 0) + 1);
  };
  model.on("msg:custom", onMessage);
  model.send({ type: "snapshot" });
  return () => model.off("msg:custom", onMessage);
}
export default { render };
"""


class StreamLineWidget(anywidget.AnyWidget):
    _esm = _ESM
    names = traitlets.List(traitlets.Unicode()).tag(sync=True)
    title = traitlets.Unicode("").tag(sync=True)
    height = traitlets.Int(350).tag(sync=True)
    time_axis = traitlets.Bool(True).tag(sync=True)


class LiveStreamLine(LiveView):
    """One line per ``y`` column of ``buffer`` against its timestamps; only new points travel each frame.

    ``bytes_sent`` counts the JSON sent to the browser (``last_frame_bytes``: the last frame's,
    ``points_sent``: its points); ``snapshots`` the whole windows sent (one per view shown).
    """

    source_attribute = "buffer"

    def __init__(
        self,
        buffer,
        y: Union[str, Sequence[str]],
        *,
        window: Window = "30s",
        fps: float = 10,
        title: Optional[str] = None,
        height: int = 350,
        max_points: int = 2000,
    ) -> None:
        self._window_kind, self._window_size = window_span(window)
        if isinstance(max_points, bool) or not isinstance(max_points, int) or max_points < 4:
            raise ValueError(f"max_points={max_points!r}: expected an int >= 4")
        self.buffer = buffer
        self.columns = [y] if isinstance(y, str) else list(y)
        if not self.columns or not all(isinstance(c, str) for c in self.columns):
            raise ValueError(f"y={y!r}: expected a column name or a list of column names")
        self.window = window
        self.max_points = max_points
        self.bytes_sent = self.last_frame_bytes = self.snapshots = self.points_sent = 0
        self._sent_until: Optional[float] = None  # the newest timestamp the browser has
        self._snapshot_asked = 0
        widget = StreamLineWidget(names=self.columns, title=title or ", ".join(self.columns), height=height)
        widget.on_msg(self._from_browser)
        super().__init__(widget, fps)

    def _from_browser(self, widget: Any, content: Any, buffers: List[Any]) -> None:
        kind = content.get("type") if isinstance(content, dict) else None
        if kind == "snapshot":
            self._snapshot_asked += 1
            self._sent_until = None
        elif kind == "plotly":
            from plotly.offline import get_plotlyjs

            widget.send({"type": "plotly"}, buffers=[get_plotlyjs().encode()])

    def _source_replaced(self) -> None:
        self._sent_until = None  # the browser holds the old buffer's points: send the new one whole

    def _version(self) -> Hashable:
        return len(self.buffer), self.buffer.last_timestamp, self._snapshot_asked

    def _render(self) -> None:
        frame = self.buffer.get()
        if frame.empty:
            return
        stamps = frame[self.buffer.timestamp_column].to_numpy(dtype=np.float64)
        newest = float(stamps[-1])
        if self._window_kind == "rows":
            start = max(len(stamps) - self._window_size, 0)
            span = max(newest - float(stamps[start]), 1.0)
        else:
            span = self._window_size
            start = int(stamps.searchsorted(newest - span))
        reset = self._sent_until is None
        if not reset:
            start = max(start, int(stamps.searchsorted(self._sent_until, side="right")))
        if start >= len(stamps):
            return
        xs = stamps[start:]
        # the window's point budget, shared out by time: a frame's new points get their share of it
        budget = max(4, int(self.max_points * min(1.0, (newest - float(xs[0])) / span)))
        lines_x, lines_y = [], []
        for column in self.columns:
            ys = frame[column].to_numpy(dtype=np.float64)[start:]
            keep = minmax_indices(xs, ys, max(1, (budget - 2) // 2)) if len(ys) > budget else slice(None)
            lines_x.append(xs[keep].tolist())
            lines_y.append([None if v != v else v for v in ys[keep].tolist()])  # NaN is no JSON
        message = {"type": "reset" if reset else "extend", "x": lines_x, "y": lines_y, "keep": self.max_points}
        if self._window_kind == "ms":
            message["range"] = [newest - span, newest]
        self.widget.send(message)
        self.last_frame_bytes = len(json.dumps(message))
        self.bytes_sent += self.last_frame_bytes
        self.snapshots += reset
        self.points_sent = sum(len(line) for line in lines_y)
        self._sent_until = newest


def live_stream_line(
    buffer,
    y: Union[str, Sequence[str]],
    *,
    window: Window = "30s",
    fps: float = 10,
    title: Optional[str] = None,
    height: int = 350,
    max_points: int = 2000,
) -> LiveStreamLine:
    """The lighter live chart of ``buffer``: only new points go to the browser (display it: it is the chart).

    >>> live_stream_line(buffer, y="price", window="30s", fps=10)
    """
    view = LiveStreamLine(buffer, y, window=window, fps=fps, title=title, height=height, max_points=max_points)
    return view.start()
