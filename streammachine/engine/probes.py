"""Liveness and readiness, Kubernetes style: one verdict for every server that answers ``/healthz`` and ``/readyz``.

The ``--metrics-port`` server of ``streammachine run`` and the web dashboard
both answer from ``readiness()``, over status dicts shaped like
``AppStatus.as_dict()`` (or instance records of the registry, which carry the
same ``state`` and ``agents[].running``):

- live (``/healthz``): the event loop answered; the caller finds that out by
  getting statuses at all within its timeout;
- ready (``/readyz``): Redis answered, and every app reporting is running
  with all its agents' consumers up. No app reporting is not ready.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple


def readiness(statuses: Sequence[Mapping[str, Any]], redis_up: Optional[bool]) -> Tuple[bool, List[str]]:
    """``(ready, reasons)``: the reasons say what is not ready (empty when ready)."""
    reasons = []
    if not redis_up:
        reasons.append("redis is not reachable")
    if not statuses:
        reasons.append("no app is reporting")
    for status in statuses:
        name = status.get("app") or status.get("name") or "app"
        if status.get("state") != "running":
            reasons.append(f"app {name!r} is {status.get('state')}")
            continue
        down = [agent["name"] for agent in status.get("agents", ()) if not agent.get("running")]
        if down:
            reasons.append(f"app {name!r}: consumers not running for {', '.join(down)}")
    return not reasons, reasons


def probe_body(ready: bool, reasons: List[str]) -> Dict[str, Any]:
    """The JSON both servers answer ``/readyz`` with (status 200 when ready, 503 otherwise)."""
    return {"status": "ready" if ready else "not ready", "reasons": reasons}
