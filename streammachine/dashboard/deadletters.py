"""The dashboard's dead-letter views and actions, on the one dead-letter core (redis/deadletters.py).

GET  ``/api/deadletters``                      every dead-letter stream (``*:dead``) with its length
GET  ``/api/deadletters/{stream}?count=&start=`` its dead letters (error, agent, deliveries, fields truncated)
GET  ``/api/deadletters/{stream}/entry/{id}``    one dead letter, fields whole
POST ``/api/deadletters/{stream}/replay``        ``{"ids": [...] | null, "confirm": true}``: back to their streams
POST ``/api/deadletters/{stream}/purge``         ``{"ids": [...] | null, "confirm": true}``: deleted

``{stream}`` is the original stream or the dead-letter stream itself. Writes
need the bearer token (auth.py) and ``"confirm": true`` in the body.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Dict, List

from starlette.requests import Request
from starlette.routing import Route

from streammachine.dashboard.views import MAX_ENTRIES, stream_names, truncate
from streammachine.redis.deadletters import (
    SUFFIX,
    UnknownDeadLetter,
    count_dead_letters,
    list_dead_letters,
    purge_dead_letters,
    replay_dead_letters,
    show_dead_letter,
)


async def streams(client: Any, request: Request) -> List[Dict[str, Any]]:
    dead = [name for name in await stream_names(client) if name.endswith(SUFFIX)]
    return [
        {"dead_letter_stream": name, "stream": name[: -len(SUFFIX)], "count": await count_dead_letters(client, name)}
        for name in dead
    ]


async def listing(client: Any, request: Request) -> Dict[str, Any]:
    params = request.query_params
    try:
        count = int(params.get("count", "100"))
    except ValueError:
        raise ValueError(f"count={params.get('count')!r}: expected an integer 1-{MAX_ENTRIES}") from None
    if not 1 <= count <= MAX_ENTRIES:
        raise ValueError(f"count={count}: expected an integer 1-{MAX_ENTRIES}")
    stream = request.path_params["stream"]
    letters = await list_dead_letters(client, stream, start=params.get("start") or "-", count=count)
    rows = []
    for letter in letters:
        row = letter.to_dict()
        row["fields"] = {key: truncate(value) for key, value in letter.fields.items()}
        rows.append(row)
    return {"stream": stream, "count": await count_dead_letters(client, stream), "dead_letters": rows}


async def entry(client: Any, request: Request) -> Dict[str, Any]:
    stream, entry_id = request.path_params["stream"], request.path_params["id"]
    letter = await show_dead_letter(client, stream, entry_id)
    if letter is None:
        raise LookupError(f"no dead letter {entry_id!r} in the dead letters of {stream!r}")
    return letter.to_dict()


async def _confirmed_ids(request: Request) -> Any:
    try:
        body = json.loads(await request.body() or b"{}")
    except ValueError as exc:
        raise ValueError(f'the body is not JSON ({exc}): expected {{"ids": [...] or null, "confirm": true}}') from None
    if not isinstance(body, dict) or body.get("confirm") is not True:
        raise ValueError('this action changes streams: send {"confirm": true} (and "ids": [...] or null for all)')
    ids = body.get("ids")
    if ids is not None and not (isinstance(ids, list) and all(isinstance(i, str) for i in ids)):
        raise ValueError(f"ids={ids!r}: expected a list of entry ids, or null for every dead letter")
    return ids


async def replay(client: Any, request: Request) -> Dict[str, Any]:
    ids = await _confirmed_ids(request)
    try:
        result = await replay_dead_letters(client, request.path_params["stream"], ids)
    except UnknownDeadLetter as exc:
        raise LookupError(str(exc)) from None
    return result.to_dict()


async def purge(client: Any, request: Request) -> Dict[str, Any]:
    ids = await _confirmed_ids(request)
    try:
        deleted = await purge_dead_letters(client, request.path_params["stream"], ids)
    except UnknownDeadLetter as exc:
        raise LookupError(str(exc)) from None
    return {"purged": deleted}


def routes(endpoint: Callable) -> List[Route]:
    return [
        Route("/api/deadletters", endpoint(streams)),
        Route("/api/deadletters/{stream:path}/entry/{id}", endpoint(entry)),
        Route("/api/deadletters/{stream:path}/replay", endpoint(replay), methods=["POST"]),
        Route("/api/deadletters/{stream:path}/purge", endpoint(purge), methods=["POST"]),
        Route("/api/deadletters/{stream:path}", endpoint(listing)),
    ]
