"""Throttled redraws on the kernel's own event loop.

A live view is a widget plus a task on the running loop (the kernel's loop in
a notebook) that redraws it at most ``fps`` times a second, and only when the
source changed. Python-side plotly has no ``extendTraces``, so every redraw
sends whole arrays: views keep them to a bounded window. A redraw that takes
long gets as much idle time as it took, so drawing never takes more than
half the kernel's time and cells stay responsive. ``stop()`` ends the task
and leaves the last frame on screen; closing the view (or the widget) ends
it too, and so does re-running the cell that made it (the new view replaces
it). A view whose widget the frontend no longer shows (its output cleared)
skips its redraws until it is shown again; one whose source variable was
re-bound follows the new source or says it is stale (see ``following``).
"""

from __future__ import annotations

import asyncio
import html
import logging
import time
from typing import Any, Hashable, Optional, TypeVar

from streammachine._validate import check_positive
from streammachine.notebook import following

log = logging.getLogger("streammachine.notebook")

MAX_FPS = 60.0
_NEVER = object()
_View = TypeVar("_View", bound="LiveView")


def close_tree(widget: Any) -> None:
    """Close a container before its children.

    Views are removed while the children's comms are still open: plotly's
    frontend sends a last message as its view goes, and a FigureWidget
    closed while displayed makes it fail ("no comm channel defined").
    """
    if getattr(widget, "comm", None) is not None:
        widget.close()
    for child in getattr(widget, "children", ()):
        close_tree(child)


class LiveView:
    """A widget redrawn from a data source by a throttled loop task.

    Subclasses define ``_version()`` (cheap; changes whenever the source has
    new data) and ``_render()`` (update the widget from a bounded window), and
    may define ``async _poll()`` to fetch data before each frame.

    Counters for tests and benchmarks: ``frames`` (redraws done), ``skipped``
    (frames not drawn because nothing changed), ``last_render_ms``,
    ``errors``/``last_error`` (a failing redraw is logged once and retried on
    the next frame; it never kills the loop).
    """

    def __init__(self, widget: Any, fps: float) -> None:
        check_positive("fps", fps, maximum=MAX_FPS)
        self.widget = widget
        self.fps = float(fps)
        self.frames = 0
        self.skipped = 0
        self.errors = 0
        self.last_error: Optional[str] = None
        self.last_render_ms = 0.0
        self._seen: Any = _NEVER
        self._closed = False
        self._task: Optional[asyncio.Task] = None
        self.hidden_frames = 0  # frames skipped because no frontend shows the widget
        self.stale: Optional[str] = None  # why the view no longer follows its source, when it does not
        self._source_names: tuple = ()
        self._shown = False
        if getattr(widget, "_view_count", 0) is None:
            widget._view_count = 0  # the frontend counts its views of the widget: 0 again means not shown
            widget.observe(self._views_counted, names="_view_count")

    # -- what subclasses provide --------------------------------------------

    def _version(self) -> Hashable:
        raise NotImplementedError

    def _render(self) -> None:
        raise NotImplementedError

    async def _poll(self) -> None:
        """Fetch what the next frame needs (I/O belongs here, not in ``_render``)."""

    source_attribute = ""  # the attribute holding what the view watches ("buffer", "aggregator", "app")

    def _source_replaced(self) -> None:
        """The source was swapped for a new one (its variable re-bound): drop what came from the old one."""

    # -- drawing -------------------------------------------------------------

    def refresh(self, force: bool = False) -> bool:
        """Redraw now if the source changed (or ``force``); True when it drew."""
        version = self._version()
        if not force and version == self._seen:
            self.skipped += 1
            return False
        started = time.perf_counter()
        self._render()
        self.last_render_ms = (time.perf_counter() - started) * 1000.0
        self._seen = version
        self.frames += 1
        return True

    def start(self: _View) -> _View:
        """Start the refresh task on the running loop (done by the ``live_*`` helpers)."""
        if self._task is not None and not self._task.done():
            return self
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise RuntimeError(
                f"{type(self).__name__} refreshes from a task on a running event loop (a Jupyter kernel or "
                "asyncio code); without one, call view.refresh() to redraw by hand"
            ) from None
        following.replace_earlier_views(self)
        if self.source_attribute:
            self._source_names = following.names_holding(getattr(self, self.source_attribute))
        self._task = loop.create_task(self._run(), name=f"streammachine:{type(self).__name__}")
        return self

    def _follow_source(self) -> None:
        """The variable that held the source holds another one now: follow it if it is of the same kind."""
        current = getattr(self, self.source_attribute)
        name, now = following.rebound(self._source_names, current)
        if name is None:
            return
        if now is not None and type(now) is type(current):
            setattr(self, self.source_attribute, now)
            self._source_replaced()
            self._seen = _NEVER
            self._source_names = following.names_holding(now) or self._source_names
            self._show_notice("")
            self.stale = None
            return
        if self.stale is None:
            self.stale = f"`{name}` no longer holds the {type(current).__name__} this view shows: it is stale"
            self._show_notice(self.stale)

    def _show_notice(self, text: str) -> None:
        children = getattr(self.widget, "children", None)
        if children is None:
            return
        notice = getattr(self, "_notice", None)
        if notice is None:
            if not text:
                return
            import ipywidgets as widgets

            notice = self._notice = widgets.HTML()
            self.widget.children = (notice, *children)
        notice.value = f"<i>{html.escape(text)}</i>" if text else ""

    def _views_counted(self, change: dict) -> None:
        self._shown = self._shown or bool(change["new"])

    @property
    def hidden(self) -> bool:
        """True when the frontend showed the widget and shows it no more (its output was cleared)."""
        return self._shown and getattr(self.widget, "_view_count", None) == 0

    async def _run(self) -> None:
        period = 1.0 / self.fps
        while not self.closed:
            started = time.perf_counter()
            if self.hidden:
                self.hidden_frames += 1
                await asyncio.sleep(period)
                continue
            try:
                if self._source_names:
                    self._follow_source()
                await self._poll()
                if self.closed:
                    break
                self.refresh()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bad frame must not end the view: report once, keep going
                self.errors += 1
                message = f"{type(exc).__name__}: {exc}"
                if message != self.last_error:
                    log.warning("%s: redraw failed: %s", type(self).__name__, message, exc_info=exc)
                self.last_error = message
            spent = time.perf_counter() - started
            await asyncio.sleep(max(period - spent, spent))

    # -- lifecycle -----------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def closed(self) -> bool:
        """True after ``stop()``/``close()``, or once the widget or one of its parts was closed (comm gone)."""
        parts = (self.widget, *getattr(self.widget, "children", ()))
        return self._closed or any(getattr(part, "comm", True) is None for part in parts)

    def stop(self) -> None:
        """Stop refreshing; the widget stays on the page showing its last frame."""
        self._closed = True
        if self._task is not None and not self._task.done():
            self._task.cancel()

    def close(self) -> None:
        """Stop refreshing and close the widget (its views disappear from the page)."""
        self.stop()
        close_tree(self.widget)

    # -- display: the view shows as its widget --------------------------------

    def _repr_mimebundle_(self, **kwargs: Any):
        bundle = getattr(self.widget, "_repr_mimebundle_", None)
        if bundle is None:  # closed widget
            return {"text/plain": repr(self)}
        return bundle(**kwargs)

    def __repr__(self) -> str:
        state = "closed" if self.closed else ("running" if self.running else "not started")
        return f"<{type(self).__name__} {state}, {self.frames} frames at <= {self.fps:g} fps>"
