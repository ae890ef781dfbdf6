"""The web dashboard: every instance, agent, stream and group of one Redis, in a browser (extra ``[dashboard]``).

- ``engine/instances.py`` keeps the registry every running App writes to;
- ``election.py``: exactly one dashboard per Redis (a lock with an owner
  token, renewed while it serves; another candidate takes over when it dies);
- ``server.py``: uvicorn on the caller's own event loop (a notebook kernel's
  too), without signal handlers;
- ``api.py`` (JSON, probes), ``events.py`` (one SSE stream of live figures),
  ``views.py`` (what the pages show, read from Redis), ``static/`` (one page).

This module imports nothing from the extra, so ``App(dashboard_enabled=True)``
and ``streammachine dashboard`` can say clearly what to install.
"""

from __future__ import annotations

import importlib.util
from typing import Optional

from streammachine._net import is_loopback
from streammachine.config import ConfigError

INSTALL_HINT = "pip install 'streammachine[dashboard]'"
_NEEDS = ("starlette", "uvicorn", "sse_starlette")


def require_extra() -> None:
    """ImportError naming the missing packages and the extra that brings them."""
    missing = [name for name in _NEEDS if importlib.util.find_spec(name) is None]
    if missing:
        raise ImportError(f"the web dashboard needs {', '.join(missing)}: {INSTALL_HINT}")


def check_bind(host: str, token: Optional[str]) -> None:
    """Refuse to serve beyond loopback without a token (the pages name streams, groups and agents)."""
    if not token and not is_loopback(host):
        raise ConfigError(
            f"binding the dashboard to {host!r} serves other machines: set STREAMMACHINE_DASHBOARD_TOKEN to a "
            "secret that browsers and clients send as 'Authorization: Bearer <token>' (or bind 127.0.0.1)"
        )


def check_port(port: int) -> int:
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ConfigError(f"dashboard_port={port!r}: expected a TCP port number 0-65535")
    return port
