"""Waiting on conditions with a deadline (never bare sleeps)."""

from __future__ import annotations

import socket
import time
from typing import Any, Callable

from streammachine.notebook.waiting import until  # the one polling loop, shared with notebooks


async def wait_until(
    predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02, what: str = ""
) -> Any:
    """Poll ``predicate`` (sync or async) until truthy; fail the test naming ``what`` after ``timeout`` s."""
    try:
        return await until(predicate, timeout, interval, what)
    except TimeoutError as exc:
        raise AssertionError(str(exc)) from None


def wait_until_sync(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)


def port_is_free(port: int, host: str = "localhost") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return False
    except OSError:
        return True


def process_gone(pid: int) -> bool:
    """The process has exited (a zombie waiting for its reaper counts as gone)."""
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True
