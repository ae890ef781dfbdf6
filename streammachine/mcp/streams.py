"""The stream tools: send (one, or an all-or-nothing batch), read (paged), info, list."""

# no `from __future__ import annotations`: the SDK evaluates tool signatures in module globals, and the
# count types below are built per server (they follow STREAMMACHINE_RECORDS)
from typing import Annotated, Any, Dict, List

from mcp.server.mcpserver.exceptions import ToolError
from pydantic import Field
from redis.exceptions import ResponseError

from streammachine._speedups import decode_dict_bytes_to_utf8
from streammachine.mcp.arguments import Cursor, StreamName, stream_id
from streammachine.mcp.limits import key_page, pack
from streammachine.mcp.models import Entry, ReadResult, SendBatchResult, SendResult, StreamInfo, StreamList
from streammachine.mcp.tooling import ADD, READ
from streammachine.redis import inspect, producer
from streammachine.redis.entries import as_text
from streammachine.redis.transport import Transport

MAX_BATCH = 10000


def text(value: Any) -> str:
    """A name, id or field from a reply as str (bytes decoded; never None)."""
    return as_text(value) or ""


def entry_rows(raw) -> List[Dict[str, Any]]:
    return [{"id": text(i), "fields": decode_dict_bytes_to_utf8(f or {})} for i, f in raw]


async def require_stream(client, stream: str) -> None:
    kind = text(await client.type(stream))
    if kind == "none":
        raise ToolError(f"stream {stream!r} does not exist")
    if kind != "stream":
        raise ToolError(f"key {stream!r} is a Redis {kind}, not a stream")


async def wrong_type(client, stream: str, exc: ResponseError) -> Exception:
    """A WRONGTYPE reply as the caller's problem (which key, which type); other errors as they are."""
    if "WRONGTYPE" not in str(exc):  # the reply itself, or a BatchSendError quoting it
        return exc
    return ToolError(f"key {stream!r} is a Redis {as_text(await client.type(stream))}, not a stream")


def register(tool, state) -> None:
    ns, limits = state.namespaces, state.limits
    Count = Annotated[
        int, Field(ge=1, le=limits.records, description=f"entries at most: 1..{limits.records} (STREAMMACHINE_RECORDS)")
    ]

    @tool(
        title="Send one message",
        example={"stream": "events", "message": {"type": "click", "user_id": "123"}},
        **ADD,
    )
    async def stream_send(
        stream: StreamName,
        message: Annotated[
            Dict[str, Any], Field(description="the fields; str/number values as they are, nested values as JSON")
        ],
    ) -> SendResult:
        """Append one message to a stream (XADD); returns the new entry's id ('<ms>-<seq>').

        The stream is created if missing. Stream names may not be the storage hash or lie under the object prefix.
        """
        client = await state.client()
        try:
            new_id = await state.connection.xadd(ns.stream(stream), message, maxlen=state.settings.stream_maxlen)
        except ResponseError as exc:
            raise await wrong_type(client, stream, exc) from None
        return SendResult(stream=stream, id=new_id)

    @tool(
        title="Send a batch (all or nothing)",
        example={
            "stream": "ticks",
            "messages": [{"symbol": "AAPL", "price": 150.25}, {"symbol": "MSFT", "price": 410}],
        },
        **ADD,
    )
    async def stream_send_batch(
        stream: StreamName,
        messages: Annotated[
            List[Dict[str, Any]],
            Field(min_length=1, max_length=MAX_BATCH, description=f"1..{MAX_BATCH} records, each a dict of fields"),
        ],
    ) -> SendBatchResult:
        """Append many messages to a stream, all or nothing: one MULTI/EXEC, so either every message is written
        (ids returned in order) or none is.

        A call that fails, or is cancelled or disconnected mid-way, never leaves part of the batch behind; when
        no result arrived, check with stream_read (latest: true) before sending again. Limits: 10000 messages
        and STREAMMACHINE_MCP_MAX_REQUEST_BYTES (default 4 MiB) of JSON per call; split larger batches.
        """
        client = await state.client()
        try:
            ids = await producer.send_batch(
                Transport(client), ns.stream(stream), messages, maxlen=state.settings.stream_maxlen, atomic=True
            )
        except ResponseError as exc:
            error = await wrong_type(client, stream, exc)
            raise (
                ToolError(f"Redis refused the batch, nothing was written: {exc}") if error is exc else error
            ) from None
        return SendBatchResult(stream=stream, count=len(ids), ids=ids)

    @tool(title="Read a stream", example={"stream": "events", "count": 10, "latest": True}, **READ)
    async def stream_read(
        stream: StreamName,
        count: Count = limits.default_count(10),
        start: Annotated[str, Field(description="first id or ms time ('-' = oldest; '(id' excludes it)")] = "-",
        end: Annotated[str, Field(description="last id or ms time ('+' = newest; '(id' excludes it)")] = "+",
        latest: Annotated[bool, Field(description="the newest `count` entries instead of the oldest")] = False,
        cursor: Cursor = None,
    ) -> ReadResult:
        """Read entries of a stream (XRANGE), oldest first; `latest` gives the newest ones (still oldest first).

        Ids and times are epoch milliseconds (a value that looks like seconds is refused). At most `count`
        entries (STREAMMACHINE_RECORDS caps it) and STREAMMACHINE_MCP_MAX_RESULT_BYTES per call: `next_cursor`
        continues (towards newer entries, or older ones with `latest`); `truncated` marks a result the size
        limit cut, and an entry whose values were cut lists them in `truncated_fields`.
        """
        start, end = stream_id("start", start), stream_id("end", end)
        if cursor is not None:
            bound = stream_id("cursor", cursor, special=())
            start, end = (start, bound) if latest else (bound, end)
        client = await state.client()
        try:  # one round trip in the common case: the key's type is asked only when the read says nothing
            if latest:
                raw = await client.xrevrange(ns.stream(stream), max=end, min=start, count=count + 1)
            else:
                raw = await client.xrange(ns.stream(stream), min=start, max=end, count=count + 1)
        except ResponseError as exc:
            raise await wrong_type(client, stream, exc) from None
        if not raw:
            await require_stream(client, stream)  # missing, or just nothing in the range
        rows = entry_rows(raw[:count])
        page, truncated = pack(rows, limits.page_budget)
        more = len(raw) > count or len(page) < len(rows)
        next_cursor = "(" + page[-1]["id"] if more and page else None
        if latest:
            page.reverse()
        entries = [Entry(**row) for row in page]
        return ReadResult(
            stream=stream, count=len(entries), entries=entries, next_cursor=next_cursor, truncated=truncated
        )

    @tool(title="Stream details", example={"stream": "events"}, **READ)
    async def stream_info(stream: StreamName) -> StreamInfo:
        """A stream's length, first/last ids, consumer groups (pending, lag) and its dead-letter stream's length."""
        from streammachine.mcp.groups import group_info

        client = await state.client()
        await require_stream(client, ns.stream(stream))
        info = await inspect.stream_info(
            client, stream, dead_letter_stream=state.dead_letter_pattern.format(stream=stream)
        )
        return StreamInfo(
            stream=stream,
            length=info["length"],
            first_id=info["first_id"],
            last_id=info["last_id"],
            groups=[group_info(g) for g in info["groups"]],
            dead_letter_stream=info["dead_letter"]["stream"],
            dead_letter_length=info["dead_letter"]["length"],
        )

    @tool(title="List streams", example={"pattern": "orders:*", "limit": 100}, **READ)
    async def stream_list(
        pattern: Annotated[str, Field(description="glob pattern for stream names ('*' = all)")] = "*",
        limit: Annotated[int, Field(ge=1, le=100000, description="names per page (1..100000)")] = 1000,
        cursor: Cursor = None,
    ) -> StreamList:
        """List the streams whose names match a glob pattern, sorted (SCAN with TYPE stream, never KEYS).

        Keys of other types and streams under the object prefix are not listed. Paged: `next_cursor` continues.
        """
        client = await state.client()
        names = set()
        async for key in client.scan_iter(match=pattern, count=1000, _type="stream"):
            name = text(key)
            if not name.startswith(ns.object_prefix):
                names.add(name)
        page, next_cursor = key_page(list(names), cursor, limit, limits.page_budget)
        return StreamList(
            pattern=pattern, streams=page, next_cursor=next_cursor, truncated=bool(next_cursor) and len(page) < limit
        )
