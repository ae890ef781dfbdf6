"""Throttled redraws on the kernel's own event loop.

A live view is a widget plus a task on the running loop (the kernel's loop in
a notebook) that redraws it at most ``fps`` times a second, and only when the
source changed. Python-side plotly has no ``extendTraces``, so every redraw
sends whole arrays: views keep them to a bounded window. A redraw that takes
long gets as much idle time as it took, so drawing never takes more than
half the kernel's time and cells stay responsive. ``stop()`` ends the task
and leaves the last frame on screen; closing the view (or the widget) ends
it too.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Hashable, Optional, TypeVar

from streammachine._validate import check_positive

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

    # -- what subclasses provide --------------------------------------------

    def _version(self) -> Hashable:
        raise NotImplementedError

    def _render(self) -> None:
        raise NotImplementedError

    async def _poll(self) -> None:
        """Fetch what the next frame needs (I/O belongs here, not in ``_render``)."""

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
        self._task = loop.create_task(self._run(), name=f"streammachine:{type(self).__name__}")
        return self

    async def _run(self) -> None:
        period = 1.0 / self.fps
        while not self.closed:
            started = time.perf_counter()
            try:
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
