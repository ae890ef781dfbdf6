"""Synchronous conveniences behind the CLI and the magics: send, tail, info, which server.

A line magic cannot await (the kernel loop is already running) and a CLI
command is one short call, so these use a plain (sync) redis client on the
App's server. Each call is one quick
round trip on loopback or a LAN; nothing here waits on stream data.
"""

from __future__ import annotations

import shlex
from typing import Dict, List, Optional

import pandas as pd
import redis

from streammachine._redact import redact_url
from streammachine.embedded import read_runtime_file
from streammachine.redis.connection import resolve_url
from streammachine.redis.entries import as_text
from streammachine.redis.inspect import stream_info_sync
from streammachine.redis.producer import send_sync


def server_url(app) -> str:
    """The App's Redis URL; resolving it first when the app has not connected yet.

    Resolving may start the per-user embedded server, exactly as ``app.start()`` would.
    """
    connection = app.redis
    return connection.url or resolve_url(connection.settings)


def sync_client(url: str, cluster: bool = False):
    if cluster or "+cluster://" in url:
        from redis.cluster import RedisCluster

        return RedisCluster.from_url(url.replace("+cluster", "", 1))
    return redis.Redis.from_url(url, socket_timeout=10)


def parse_fields(pairs: List[str]) -> Dict[str, str]:
    """``["k=v", "name='a b'"]`` (already shell-split) -> ``{"k": "v", "name": "a b"}``."""
    fields = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"field {pair!r}: expected key=value")
        fields[key] = value
    return fields


def send(client, stream: str, pairs: List[str], *, maxlen: Optional[int]) -> str:
    """XADD ``key=value`` pairs; ``maxlen`` is required so no caller forgets the App's stream_maxlen."""
    return send_sync(client, stream, parse_fields(pairs), maxlen=maxlen)


def tail(client, stream: str, count: int):
    """The last ``count`` entries, oldest first, as a DataFrame (numeric fields parsed)."""
    from streammachine.data.frames import streams_to_dataframe

    entries = list(reversed(client.xrevrange(stream, count=count)))
    # fields only (any field name is fine, even "id"), indexed by entry id
    frame = streams_to_dataframe(entries, stream_name_column=None, id_column=None, timestamp_column=None)
    frame.index = pd.Index([as_text(entry_id) for entry_id, _ in entries], name="id")
    return frame


def info(client, stream: str) -> dict:
    """Length, first/last ids and consumer groups (with pending and lag) of ``stream``; KeyError if none."""
    return stream_info_sync(client, stream)


def server_info(app) -> dict:
    """Which Redis the App uses: configured, local default, or the embedded server (URL redacted)."""
    connection = app.redis
    settings = connection.settings
    url = server_url(app)
    if connection.configured:
        kind = "configured"
    else:
        runtime = read_runtime_file(settings.home)
        kind = "embedded" if runtime and runtime.get("url") == url else "localhost"
    result = {"kind": kind, "url": redact_url(url), "app": app.name, "state": app.state}
    if kind == "embedded":
        runtime = read_runtime_file(settings.home) or {}
        result.update(pid=runtime.get("pid"), data_dir=runtime.get("data_dir"))
    return result


def split_args(line: str) -> List[str]:
    try:
        return shlex.split(line)
    except ValueError as exc:
        raise ValueError(f"cannot parse {line!r}: {exc}") from None


def describe_server(details: dict) -> str:
    text = {
        "configured": "configured server (REDIS_URL / redis_url=)",
        "localhost": "local server on localhost:6379",
        "embedded": "embedded Valkey server (no Redis configured)",
    }[details["kind"]]
    extra: Optional[str] = None
    if details.get("data_dir"):
        extra = f"data in {details['data_dir']}, pid {details.get('pid')}"
    return f"{text}: {details['url']}" + (f" ({extra})" if extra else "")
