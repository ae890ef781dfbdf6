"""Who may use the dashboard: loopback by default, a bearer token beyond it and for every write.

- ``STREAMMACHINE_DASHBOARD_TOKEN`` set: every request but the probes and
  the page itself (which holds no data, and asks for the token) needs it,
  as ``Authorization: Bearer <token>`` or, for the page's own reads and its
  event stream (EventSource sends no headers), the ``streammachine_dashboard``
  cookie. The page never writes that cookie itself: it POSTs the token once to
  ``/api/session``, which sets it HttpOnly and SameSite=Strict (Secure behind
  https), so no script on the page can read it back. Compared in constant time.
- Write actions (any method but GET/HEAD) need the header, never the cookie
  (no cross-site request can send a header), and are refused outright
  when no token is configured.
- On a loopback bind the Host header must be a loopback name: a page from
  elsewhere that rebinds its DNS name to 127.0.0.1 gets 421.
"""

from __future__ import annotations

import hmac
import json
from typing import Optional

from starlette.datastructures import Headers
from starlette.requests import Request, cookie_parser
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

COOKIE = "streammachine_dashboard"
OPEN_PATHS = ("/", "/healthz", "/readyz")
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]", "::1")


async def refuse(send: Send, status: int, message: str, headers: Optional[dict] = None) -> None:
    body = json.dumps({"error": message}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


def bearer_token(headers: Headers) -> Optional[str]:
    """The token of an ``Authorization: Bearer <token>`` header, or None."""
    scheme, _, supplied = headers.get("authorization", "").partition(" ")
    return supplied.strip() if scheme.lower() == "bearer" else None


def _host_name(host: str) -> str:
    if host.startswith("["):
        return host.split("]", 1)[0] + "]"
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class TokenGate:
    """ASGI middleware enforcing the rules above before a request reaches the app."""

    def __init__(self, app: ASGIApp, *, token: Optional[str], loopback_only: bool) -> None:
        self.app = app
        self.token = token.encode() if token else None
        self.loopback_only = loopback_only

    def _matches(self, supplied: Optional[str]) -> bool:
        return (
            self.token is not None
            and supplied is not None
            and hmac.compare_digest(supplied.strip().encode(), self.token)
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        if self.loopback_only and _host_name(headers.get("host", "")) not in LOOPBACK_HOSTS:
            await refuse(send, 421, "this dashboard answers to loopback host names only (127.0.0.1, localhost)")
            return
        path, method = scope["path"], scope["method"]
        bearer_ok = self._matches(bearer_token(headers))
        if method not in ("GET", "HEAD"):
            if self.token is None:
                await refuse(
                    send,
                    403,
                    "write actions are disabled: set STREAMMACHINE_DASHBOARD_TOKEN and send it as a bearer token",
                )
                return
            if not bearer_ok:
                await self._unauthorized(send)
                return
        elif self.token is not None and path not in OPEN_PATHS and not path.startswith("/static/"):
            cookie_ok = self._matches(cookie_parser(headers.get("cookie", "")).get(COOKIE, ""))
            if not (bearer_ok or cookie_ok):
                await self._unauthorized(send)
                return
        await self.app(scope, receive, send)

    @staticmethod
    async def _unauthorized(send: Send) -> None:
        await refuse(
            send,
            401,
            "missing or wrong token: send 'Authorization: Bearer <token>' with the dashboard's "
            "STREAMMACHINE_DASHBOARD_TOKEN",
            {"www-authenticate": 'Bearer realm="streammachine-dashboard"'},
        )


async def open_session(request: Request) -> Response:
    """POST /api/session: the gate has checked the bearer token (a write); hand it back as an HttpOnly cookie."""
    response = Response(status_code=204)
    response.set_cookie(
        COOKIE,
        bearer_token(request.headers) or "",
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response
