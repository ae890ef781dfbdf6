"""What a stream holds and who reads it: stream info, consumer groups, consumers, group backlog.

One async core for every place that shows it: ``App.status()``, the
notebook's status table and dashboard, the Prometheus metrics, the CLI's
``info``, the ``%streammachine info`` magic (``console.info``) and the MCP
tools ``stream_info``, ``stream_groups`` and ``stream_pending``. The CLI and
the magics hold a synchronous client: they run the same coroutines through
``sync.run_sync`` (the ``*_sync`` functions below), never a copy of them.

Shapes: XINFO fields keep Redis's names (``last-delivered-id``, ``idle``...)
with names and ids as str; each caller renders them its own way.
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

from redis.exceptions import ResponseError

from streammachine.redis.entries import as_text
from streammachine.redis.sync import awaitable, run_sync

GroupKey = Tuple[str, str]  # (stream, group)
Groups = Dict[GroupKey, dict]  # -> {"pending": int, "lag": int | None, "consumers": int}


class NotAStream(KeyError):
    """The key does not exist, or holds another type; the message says which."""

    def __str__(self) -> str:  # KeyError's str() would quote the message
        return str(self.args[0])


def _text_fields(raw: Mapping) -> dict:
    return {as_text(key): as_text(value) for key, value in raw.items()}


async def require_stream(client: Any, stream: str) -> None:
    """Raise ``NotAStream`` unless ``stream`` is a stream key (one TYPE round trip)."""
    kind = as_text(await client.type(stream))
    if kind == "none":
        raise NotAStream(f"stream {stream!r} does not exist on this server")
    if kind != "stream":
        raise NotAStream(f"key {stream!r} is a Redis {kind}, not a stream")


async def group_details(client: Any, stream: str, *, consumers: bool = False) -> List[dict]:
    """XINFO GROUPS of ``stream`` (name, consumers, pending, last-delivered-id, entries-read, lag).

    ``consumers=True`` adds ``consumer_details``: each consumer's XINFO CONSUMERS fields
    (name, pending, idle, inactive).
    """
    groups = [_text_fields(group) for group in await client.xinfo_groups(stream)]
    if consumers:
        for group in groups:
            group["consumer_details"] = [
                _text_fields(consumer) for consumer in await client.xinfo_consumers(stream, group["name"])
            ]
    return groups


async def stream_info(
    client: Any, stream: str, *, consumers: bool = False, dead_letter_stream: Optional[str] = None
) -> dict:
    """Length, first/last ids and groups (with pending and lag) of ``stream``; ``NotAStream`` if it is none.

    ``consumers=True``: each group's consumers too (``group_details``). ``dead_letter_stream``:
    adds ``dead_letter`` = {"stream", "length"} for it.
    """
    await require_stream(client, stream)
    raw = await client.xinfo_stream(stream)
    first, last = raw.get("first-entry"), raw.get("last-entry")
    info = {
        "stream": stream,
        "length": raw.get("length"),
        "first_id": as_text(first[0]) if first else None,
        "last_id": as_text(last[0]) if last else None,
        "groups": await group_details(client, stream, consumers=consumers),
    }
    if dead_letter_stream is not None:
        info["dead_letter"] = {"stream": dead_letter_stream, "length": await client.xlen(dead_letter_stream)}
    return info


async def fetch_groups(client: Any, streams: Iterable[str], *, strict: bool = False) -> Groups:
    """Pending, lag and consumer count of every group of every stream (streams in sorted order).

    A stream that does not exist yet has no groups. Any other failure (Redis down) leaves that
    stream out too, as a status table wants; ``strict=True`` raises it instead (the metrics
    must tell an outage from an empty server).
    """
    groups: Groups = {}
    for stream in sorted(set(streams)):
        try:
            reply = await client.xinfo_groups(stream)
        except ResponseError:  # no such key (or not a stream): nothing pending, no lag to show
            continue
        except Exception:
            if strict:
                raise
            continue
        for group in reply:
            groups[(stream, as_text(group["name"]))] = {  # type: ignore[index]
                "pending": group.get("pending"),
                "lag": group.get("lag"),
                "consumers": group.get("consumers"),
            }
    return groups


def fetch_groups_sync(client: Any, streams: Iterable[str]) -> Groups:
    """``fetch_groups`` on a synchronous client (the notebook magics)."""
    return run_sync(fetch_groups(awaitable(client), streams))


def stream_info_sync(client: Any, stream: str, **options: Any) -> dict:
    """``stream_info`` on a synchronous client (the CLI, the magics)."""
    return run_sync(stream_info(awaitable(client), stream, **options))
