"""Progress of long jobs (backfill, replay): a bar in a notebook, a line in a terminal, or a callback.

``progress=True`` shows it where the code runs: in a Jupyter kernel an
updating HTML progress bar (one display, updated in place), in a terminal a
single line on stderr rewritten in place, elsewhere (a pipe, a log) a line
every few seconds and one at the end. ``progress=False`` shows nothing. A
callable ``progress(done, total)`` is called instead (``total`` may be None
when unknown). Redraws are throttled, so updating per entry is cheap.
"""

from __future__ import annotations

import sys
import time
from importlib import import_module
from typing import Any, Callable, Optional, Union

ProgressOption = Union[bool, Callable[[int, Optional[int]], Any], None]


def _in_kernel() -> bool:
    ipython = sys.modules.get("IPython")
    shell = getattr(ipython, "get_ipython", lambda: None)() if ipython is not None else None
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def _rate(done: int, seconds: float) -> str:
    per_second = done / seconds if seconds > 0 else 0.0
    return f"{per_second:,.0f}/s"


class Progress:
    """Counts work done and shows it (see the module doc). ``with Progress(...) as p: p.update(n)``."""

    def __init__(self, option: ProgressOption, total: Optional[int], what: str, unit: str = "entries") -> None:
        self.total = total
        self.done = 0
        self.what = what
        self.unit = unit
        self.started = time.monotonic()
        self._callback = option if callable(option) else None
        self._mode = "off"
        if self._callback is not None:
            self._mode = "callback"
        elif option:
            self._mode = "notebook" if _in_kernel() else ("tty" if sys.stderr.isatty() else "log")
        self._interval = {"notebook": 0.2, "tty": 0.1, "log": 5.0}.get(self._mode, 0.0)
        self._last_draw = 0.0
        self._display: Any = None
        if self._mode == "notebook":
            display = import_module("IPython.display")
            self._display = display.display(display.HTML(self._html()), display_id=True)

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def update(self, n: int = 1) -> None:
        self.done += n
        if self._mode == "callback":
            self._callback(self.done, self.total)  # type: ignore[misc]
            return
        if self._mode != "off":
            now = time.monotonic()
            if now - self._last_draw >= self._interval:
                self._last_draw = now
                self._draw(final=False)

    def set_total(self, total: Optional[int]) -> None:
        self.total = total

    def close(self) -> None:
        if self._mode in ("notebook", "tty", "log"):
            self._draw(final=True)

    def _text(self) -> str:
        share = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
        of = f"/{self.total:,}" if self.total is not None else ""
        return (
            f"{self.what}: {self.done:,}{of} {self.unit}{share}, {self.elapsed:.1f}s, {_rate(self.done, self.elapsed)}"
        )

    def _html(self) -> str:
        import html

        bar = f"<progress value='{self.done}' max='{self.total}' style='width:40%'></progress> " if self.total else ""
        return f"<div>{bar}<code>{html.escape(self._text())}</code></div>"

    def _draw(self, final: bool) -> None:
        if self._mode == "notebook":
            self._display.update(import_module("IPython.display").HTML(self._html()))
        elif self._mode == "tty":
            sys.stderr.write("\r" + self._text() + ("\n" if final else ""))
            sys.stderr.flush()
        else:
            sys.stderr.write(self._text() + "\n")
            sys.stderr.flush()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
