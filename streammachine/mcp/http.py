"""The streamable-HTTP transport: DNS-rebinding protection always on, bearer-token auth, clear size limits.

- Host and Origin headers are checked on every bind (the SDK turns the check
  off for any address but loopback): loopback names, the bound address, and
  the names in STREAMMACHINE_MCP_ALLOWED_HOSTS (``--allowed-host``; pages served
  under them may call too) and STREAMMACHINE_MCP_ALLOWED_ORIGINS
  (``--allowed-origin``) are accepted; anything else gets 421 / 403.
- STREAMMACHINE_MCP_TOKEN, when set, must come as ``Authorization: Bearer
  <token>`` (compared in constant time; 401 otherwise). A bind beyond
  loopback refuses to start without one, and a wildcard bind (0.0.0.0, ::)
  refuses to start without allowed hosts.
- A body over the request limit (STREAMMACHINE_MCP_MAX_REQUEST_BYTES, plus
  room for the JSON-RPC envelope) gets a 413 JSON-RPC error that says which
  limit and how to split, instead of the SDK's bare "Request body too large".
- JSON responses (no SSE stream per call), uvloop, httptools (the ``[mcp]`` extra: uvicorn parses HTTP in C),
  no access log: less work per call.
"""

from __future__ import annotations

import hmac
import json
from typing import Any, List, Optional

from mcp.server.mcpserver import MCPServer
from mcp.server.transport_security import TransportSecuritySettings
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from streammachine.config import ConfigError, Settings

LOOPBACK = ("127.0.0.1", "localhost", "::1")
WILDCARD = ("0.0.0.0", "::", "")
ENVELOPE = 64 * 1024
"""Room for the JSON-RPC envelope around a tool's arguments: arguments under the limit always get through."""


def _with_any_port(names: List[str]) -> List[str]:
    """Each name, plus ``name:*`` for those without a port (the SDK matches ports only through ``:*``)."""
    out = []
    for name in names:
        out.append(name)
        if not name.rstrip("/").rsplit("]", 1)[-1].rpartition(":")[2].isdigit():
            out.append(name.rstrip("/") + ":*")
    return out


def check_bind(host: str, settings: Settings) -> None:
    """Refuse binds that would expose the tools without a token, or accept requests for any name."""
    if host in LOOPBACK:
        return
    if not settings.mcp_token:
        raise ConfigError(
            f"binding the MCP server to {host!r} serves other machines: set STREAMMACHINE_MCP_TOKEN to a secret "
            "that clients send as 'Authorization: Bearer <token>' (or bind 127.0.0.1)"
        )
    if host in WILDCARD and not settings.mcp_allowed_hosts:
        raise ConfigError(
            f"binding {host!r} answers to any host name: say which Host headers clients use with --allowed-host "
            "NAME[:PORT] (or STREAMMACHINE_MCP_ALLOWED_HOSTS=name1,name2), so DNS rebinding stays blocked"
        )


def transport_security(host: str, settings: Settings) -> TransportSecuritySettings:
    hosts = ["127.0.0.1", "localhost", "[::1]"]
    origins = ["http://127.0.0.1", "http://localhost", "http://[::1]"]
    if host not in LOOPBACK + WILDCARD:
        bound = f"[{host}]" if ":" in host else host
        hosts.append(bound)
        origins += [f"http://{bound}", f"https://{bound}"]
    for name in settings.mcp_allowed_hosts:  # a page served under an allowed name may call the server too
        hosts.append(name)
        origins += [f"http://{name}", f"https://{name}"]
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=_with_any_port(hosts),
        allowed_origins=_with_any_port(origins + list(settings.mcp_allowed_origins)),
    )


async def _refuse(send: Send, status: int, message: str, headers: Optional[dict] = None) -> None:
    body = json.dumps({"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": message}}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


class Gate:
    """Bearer token and request size, checked before a request reaches the SDK."""

    def __init__(self, app: ASGIApp, *, token: Optional[str], max_request_bytes: int) -> None:
        self.app = app
        self.token = token.encode() if token else None
        self.max_request_bytes = max_request_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        if self.token is not None:
            scheme, _, supplied = headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(supplied.strip().encode(), self.token):
                await _refuse(
                    send,
                    401,
                    "missing or wrong bearer token: send 'Authorization: Bearer <token>' with the server's "
                    "STREAMMACHINE_MCP_TOKEN",
                    {"www-authenticate": 'Bearer realm="streammachine"'},
                )
                return
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > self.max_request_bytes + ENVELOPE:
            await _refuse(
                send,
                413,
                f"the request is {int(length)} bytes, over this server's limit of {self.max_request_bytes} bytes "
                "of tool arguments (STREAMMACHINE_MCP_MAX_REQUEST_BYTES, the same over stdio and HTTP); split "
                "it, e.g. stream_send_batch into several calls each under the limit",
            )
            return
        await self.app(scope, receive, send)


def app(server: MCPServer, settings: Settings, host: str) -> Any:
    """The ASGI app serving ``server`` at /mcp, guarded as above (ConfigError for a bind it must refuse)."""
    check_bind(host, settings)
    starlette_app = server.streamable_http_app(
        # one JSON body per call instead of an SSE stream: less work per call on both sides, and no SSE event
        # limit in clients; the tools send no progress or server-to-client requests that would need the stream
        json_response=True,
        transport_security=transport_security(host, settings),
        max_request_body_size=settings.mcp_max_request_bytes + ENVELOPE,
        host=host,
    )
    return Gate(starlette_app, token=settings.mcp_token, max_request_bytes=settings.mcp_max_request_bytes)


def run(asgi_app: Any, host: str, port: int, log_level: str) -> None:
    import uvicorn

    # loop="auto": uvloop where installed
    config = uvicorn.Config(asgi_app, host=host, port=port, log_level=log_level.lower(), access_log=False, loop="auto")
    uvicorn.Server(config).run()
