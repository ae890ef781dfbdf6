"""The dashboard's ASGI app: the page, the JSON API, one SSE stream, the probes.

Endpoints (GET, JSON): ``/api/health``, ``/api/instances``,
``/api/instance/{id}``, ``/api/agents``, ``/api/timers``, ``/api/storage``,
``/api/streams``, ``/api/streams/{name}/entries?count=&start=&end=``,
``/api/streams/{name}/groups``, ``/api/events`` (SSE: a ``live`` event per
second with throughput, pending and lag per group, pending per consumer,
errors, instances), ``/healthz`` and ``/readyz``. Passwords never appear: the
server URL is redacted, error messages scrubbed (``_redact.py``).

Auth (``auth.py``): with ``STREAMMACHINE_DASHBOARD_TOKEN`` set, every request
but the probes needs it; write actions need it always. ``POST /api/session``
(bearer token) sets the page's HttpOnly cookie.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path
from typing import Any, Awaitable, Callable

from sse_starlette.sse import EventSourceResponse
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from streammachine._net import is_loopback
from streammachine._redact import scrub
from streammachine.dashboard import deadletters, views
from streammachine.dashboard.auth import TokenGate, open_session
from streammachine.dashboard.election import current_owner
from streammachine.engine.probes import probe_body, readiness

log = logging.getLogger("streammachine.dashboard")

STATIC = Path(__file__).parent / "static"
LIVE_INTERVAL = 1.0


def plotly_js() -> Path | None:
    """plotly.js as the plotly package ships it (served from here, never from a CDN); None when not installed."""
    import importlib.util

    spec = importlib.util.find_spec("plotly")  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "package_data" / "plotly.min.js"
    return path if path.exists() else None


def build(candidate: Any, stopping: asyncio.Event) -> Any:
    """The app for one elected candidate (its connection, its App's status for ``/readyz``)."""
    connection = candidate.connection

    def safe(text: str) -> str:
        return scrub(text, [connection.url])

    def endpoint(fetch: Callable[[Any, Request], Awaitable[Any]]) -> Callable[[Request], Awaitable[Response]]:
        async def handle(request: Request) -> Response:
            try:
                client = await connection.get_client()
                result = await fetch(client, request)
            except LookupError as exc:
                return JSONResponse({"error": safe(str(exc.args[0] if exc.args else exc))}, status_code=404)
            except ValueError as exc:
                return JSONResponse({"error": safe(str(exc))}, status_code=400)
            except Exception as exc:
                log.debug("dashboard: %s failed", request.url.path, exc_info=True)
                return JSONResponse({"error": safe(f"{type(exc).__name__}: {exc}")}, status_code=503)
            return JSONResponse(result)

        return handle

    async def health(client: Any, request: Request) -> Any:
        redis_up = await connection.health_check()
        found = await views.instances(client) if redis_up else []
        return {
            "status": "ok" if redis_up else "degraded",
            "redis": "connected" if redis_up else "disconnected",
            "server": connection.safe_url,
            "instances": len(found),
            "agents": sum(len(i.get("agents", ())) for i in found),
            "dashboard": {"instance": candidate.instance_id, "url": candidate.url, "terms": candidate.terms}
            | {"owner": await current_owner(client) if redis_up else None},
            "time": time.time(),
        }

    async def instance(client: Any, request: Request) -> Any:
        found = await views.instance(client, request.path_params["id"])
        if found is None:
            raise LookupError(f"no live instance {request.path_params['id']!r} (stopped, or its heartbeat expired)")
        return found

    async def entries(client: Any, request: Request) -> Any:
        params = request.query_params
        try:
            count = int(params.get("count", "50"))
        except ValueError:
            raise ValueError(f"count={params.get('count')!r}: expected an integer 1-{views.MAX_ENTRIES}") from None
        if not 1 <= count <= views.MAX_ENTRIES:
            raise ValueError(f"count={count}: expected an integer 1-{views.MAX_ENTRIES}")
        name = request.path_params["name"]
        if await client.type(name) not in (b"stream", "stream"):
            raise LookupError(f"stream {name!r} does not exist on this server")
        return await views.entries(client, name, count, params.get("start") or None, params.get("end") or None)

    async def stream_groups(client: Any, request: Request) -> Any:
        name = request.path_params["name"]
        if await client.type(name) not in (b"stream", "stream"):
            raise LookupError(f"stream {name!r} does not exist on this server")
        return await views.groups(client, name)

    async def events(request: Request) -> Response:
        async def frames():
            while not stopping.is_set() and not await request.is_disconnected():
                try:
                    client = await connection.get_client()
                    data = await views.live(client)
                except Exception as exc:
                    data = {"time": time.time(), "error": safe(f"{type(exc).__name__}: {exc}")}
                yield {"event": "live", "data": json.dumps(data)}
                try:
                    await asyncio.wait_for(stopping.wait(), LIVE_INTERVAL)
                except asyncio.TimeoutError:
                    pass

        return EventSourceResponse(frames(), ping=15)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "alive"})  # answering at all means the loop runs

    async def readyz(request: Request) -> Response:
        redis_up = await connection.health_check()
        if candidate.local_status is not None:
            statuses = [(await candidate.local_status()).as_dict()]
        else:  # standalone: the deployment's instances are what must be running
            statuses = await views.instances(await connection.get_client()) if redis_up else []
        ready, reasons = readiness(statuses, redis_up)
        return JSONResponse(probe_body(ready, reasons), status_code=200 if ready else 503)

    async def page(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers={"cache-control": "no-cache"})

    async def plotly(request: Request) -> Response:
        path = plotly_js()
        if path is None:
            return Response("plotly is not installed: " + "pip install 'streammachine[dashboard]'", status_code=404)
        return FileResponse(path, media_type="text/javascript", headers={"cache-control": "max-age=86400"})

    async def static(request: Request) -> Response:
        name = request.path_params["name"]
        path = STATIC / name
        if "/" in name or name.startswith(".") or not path.is_file():
            return Response("not found", status_code=404)
        return FileResponse(path, headers={"cache-control": "no-cache"})

    def read(fetch: Callable[[Any], Awaitable[Any]]) -> Callable[[Any, Request], Awaitable[Any]]:
        async def call(client: Any, request: Request) -> Any:
            return await fetch(client)

        return call

    routes = [
        Route("/", page),
        Route("/static/plotly.min.js", plotly),
        Route("/static/{name}", static),
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/api/health", endpoint(health)),
        Route("/api/instances", endpoint(read(views.instances))),
        Route("/api/instance/{id:path}", endpoint(instance)),
        Route("/api/agents", endpoint(read(views.agents))),
        Route("/api/timers", endpoint(read(views.timers))),
        Route("/api/storage", endpoint(read(views.storage))),
        Route("/api/streams", endpoint(read(views.streams))),
        Route("/api/streams/{name:path}/entries", endpoint(entries)),
        Route("/api/streams/{name:path}/groups", endpoint(stream_groups)),
        Route("/api/events", events),
        Route("/api/session", open_session, methods=["POST"]),
        *deadletters.routes(endpoint),
    ]
    return TokenGate(Starlette(routes=routes), token=candidate.token, loopback_only=is_loopback(candidate.host))
