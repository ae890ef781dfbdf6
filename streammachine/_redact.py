"""The one secret filter: passwords never reach logs, errors, status output or MCP results."""

from __future__ import annotations

import re
from typing import Iterable, List, Optional
from urllib.parse import parse_qsl, urlsplit, urlunsplit

# any scheme://user:secret@ in free text (a URL we were not told about)
_URL_PASSWORD = re.compile(r"(\w[\w+.-]*://[^:/@\s]*:)[^@\s]+@")


def redact_url(url: str) -> str:
    """The URL with any password (in the userinfo or a ``*pass*`` query argument) replaced; never raises."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        userinfo, at, hostport = netloc.rpartition("@")
        if at and ":" in userinfo:
            netloc = f"{userinfo.split(':', 1)[0]}:***@{hostport}"
        query = "&".join(_redact_query_pair(pair) for pair in parts.query.split("&")) if parts.query else ""
        return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    except ValueError:
        return "(unparseable Redis URL, hidden)"


def _redact_query_pair(pair: str) -> str:
    name, eq, _ = pair.partition("=")
    return f"{name}=***" if eq and "pass" in name.lower() else pair


def url_secrets(url: Optional[str]) -> List[str]:
    """The password in ``url``'s userinfo and in any ``*pass*`` query argument."""
    if not url:
        return []
    try:
        parts = urlsplit(url)
        found = [parts.password] if parts.password else []
    except ValueError:
        return [url]
    found += [v for k, v in parse_qsl(parts.query) if "pass" in k.lower() and v]
    return found


def scrub(text: str, urls: Iterable[Optional[str]] = ()) -> str:
    """``text`` with the passwords of ``urls``, and of any URL written in it, replaced by ``***``."""
    for url in urls:
        for secret in url_secrets(url):
            text = text.replace(secret, "***")
    return _URL_PASSWORD.sub(r"\1***@", text)
