"""The Manager process behind ``"manager"`` storage: one dict and its lock stripes.

An App starts its own (on first use of ``app.storage``); its forked workers
(``processes=N``) inherit the connection. ``streammachine run --workers N``
starts one in the supervisor and hands every worker its address and key
(``STREAMMACHINE_STORAGE_MANAGER``), so N worker processes share one store,
as ``processes=N`` workers do, instead of each having its own.

A Manager exits when the process that started it is gone, even SIGKILLed.
"""

from __future__ import annotations

import os
import threading
import time
from multiprocessing.managers import AcquirerProxy, BaseManager, DictProxy  # type: ignore[attr-defined]
from typing import Any, Dict, List, Tuple

STRIPES = 64

# Only the Manager's own process uses these: they are what the proxies reach.
_store: Dict[str, Any] = {}
_stripes: List[threading.Lock] = [threading.Lock() for _ in range(STRIPES)]


def _the_store() -> Dict[str, Any]:
    return _store


def _the_stripe(index: int) -> threading.Lock:
    return _stripes[index]


class StoreManager(BaseManager):
    """Serves one dict (``store()``) and ``STRIPES`` locks (``stripe(i)``) to every process that connects."""


StoreManager.register("store", callable=_the_store, proxytype=DictProxy)
StoreManager.register("stripe", callable=_the_stripe, proxytype=AcquirerProxy)


def start_manager() -> StoreManager:
    """A new Manager process, tied to this one's life."""
    manager = StoreManager(authkey=os.urandom(32))
    manager.start(_exit_with, (os.getpid(),))
    return manager


def connect_manager(locator: str) -> StoreManager:
    """A connection to the Manager that ``locator(manager)`` describes (one started elsewhere)."""
    address, key = parse_locator(locator)
    manager = StoreManager(address=address, authkey=key)
    manager.connect()
    return manager


def locator(manager: StoreManager) -> str:
    """``ADDRESS#KEY``: what a worker needs to connect (secret: pass it in the environment, never on argv)."""
    key: bytes = bytes(manager._authkey)  # type: ignore[attr-defined]
    return f"{manager.address!s}#{key.hex()}"


def parse_locator(text: str) -> Tuple[str, bytes]:
    address, sep, key = text.rpartition("#")
    if not sep or not address:
        raise ValueError(f"storage manager locator {text[:40]!r}...: expected ADDRESS#HEXKEY")
    return address, bytes.fromhex(key)


def _exit_with(parent_pid: int) -> None:
    """In the Manager's process: exit once the process that started it is gone."""

    def watch() -> None:
        while True:
            time.sleep(0.5)
            try:
                os.kill(parent_pid, 0)
            except (ProcessLookupError, PermissionError):  # gone (or the pid now belongs to someone else)
                os._exit(0)

    if os.name == "posix":  # signal 0 probes a process only there
        threading.Thread(target=watch, name="streammachine-manager-watch", daemon=True).start()
