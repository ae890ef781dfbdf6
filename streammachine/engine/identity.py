"""Consumer names: stable per host, process, app, agent and slot.

A name looks like ``host-pid-app:agent:slot`` (or ``NAME-app:agent:slot``
with ``STREAMMACHINE_CONSUMER_NAME=NAME``). A restarted worker reuses its
slot's name, so it takes its own pending entries back; a restarted process
has a new pid, and ``dead_local_owner`` lets it adopt what its dead
predecessor on this host left pending.
"""

from __future__ import annotations

import os
import re
import socket
from typing import Optional


def consumer_base(override: Optional[str] = None) -> str:
    """Stable per host and process: ``host-pid``, or STREAMMACHINE_CONSUMER_NAME."""
    return override or f"{socket.gethostname()}-{os.getpid()}"


def app_consumer_base(override: Optional[str], app_name: str) -> str:
    """The base of every consumer name of one App in this process."""
    return f"{consumer_base(override)}-{app_name}"


def consumer_name(base: str, agent_name: str, slot: str) -> str:
    """One consumer of an agent: the agent's short name (after the last dot) and its slot."""
    return f"{base}:{agent_name.rsplit('.', 1)[-1]}:{slot}"


def dead_local_owner(consumer: str) -> bool:
    """True when ``consumer`` was named by a process of this host (``host-pid...``) that no longer runs.

    Only default names carry a pid; a host name shared by two machines would
    make a live remote consumer look dead here: its entries are then taken
    over early (duplicates, never a loss).
    """
    match = re.match(re.escape(socket.gethostname()) + r"-(\d+)-", consumer)
    if not match:
        return False
    pid = int(match.group(1))
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, someone else's
        return False
    return False
