"""Waiting in a notebook cell without blocking the kernel: ``await until(...)``."""

from __future__ import annotations

import asyncio
import inspect
import time
from typing import Any, Callable


async def until(predicate: Callable[[], Any], timeout: float = 30.0, interval: float = 0.05, what: str = "") -> Any:
    """Return the predicate's first truthy value; raise TimeoutError naming ``what`` after ``timeout`` s.

    The predicate may be sync or async. While waiting, agents, timers and
    live views keep running (``time.sleep`` in a cell would freeze them all).
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"gave up after {timeout:g}s waiting for {what or getattr(predicate, '__name__', 'the condition')}"
            )
        await asyncio.sleep(interval)
