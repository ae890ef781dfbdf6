"""Consumer groups through MCP: inspect (groups, pending), consume (read, ack), manage (create,
move, destroy) and trim a stream; moving, destroying and trimming need ``confirm: true``, and read-only mode
hides every tool here that changes Redis."""

# no `from __future__ import annotations`: the SDK evaluates tool signatures in module globals, and the
# count types below are built per server (they follow STREAMMACHINE_RECORDS)
import re
from typing import Annotated, List, Optional

from mcp.server.mcpserver.exceptions import ToolError
from pydantic import Field
from redis.exceptions import ResponseError

from streammachine.mcp.arguments import Confirm, Cursor, GroupName, StreamName, stream_id
from streammachine.mcp.limits import pack
from streammachine.mcp.models import (
    Acked,
    ConsumerInfo,
    Entry,
    GroupCreated,
    GroupDestroyed,
    GroupInfo,
    GroupRead,
    GroupReset,
    PendingEntry,
    PendingResult,
    StreamGroups,
    Trimmed,
)
from streammachine.mcp.streams import entry_rows, require_stream, text
from streammachine.mcp.tooling import ADD, OVERWRITE, READ, hints
from streammachine.redis import inspect, positions
from streammachine.redis.entries import as_text, single_stream_entries

ConsumerName = Annotated[str, Field(min_length=1, max_length=256, description="consumer name within the group")]


def group_info(group: dict) -> GroupInfo:
    """One group as ``redis.inspect.group_details`` reads it, as the tools return it."""
    details = group.get("consumer_details")
    lag = group.get("lag")
    return GroupInfo(
        name=group["name"],
        consumers=int(group["consumers"]),
        pending=int(group["pending"]),
        lag=None if lag is None else int(lag),
        last_delivered_id=group["last-delivered-id"],
        consumer_details=None
        if details is None
        else [
            ConsumerInfo(name=c["name"], pending=c["pending"], idle_ms=c["idle"], inactive_ms=c.get("inactive"))
            for c in details
        ],
    )


async def group_infos(client, stream: str, with_consumers: bool) -> List[GroupInfo]:
    return [group_info(g) for g in await inspect.group_details(client, stream, consumers=with_consumers)]


async def require_group(client, stream: str, group: str) -> GroupInfo:
    await require_stream(client, stream)
    groups = await group_infos(client, stream, False)
    for info in groups:
        if info.name == group:
            return info
    raise ToolError(f"stream {stream!r} has no consumer group {group!r} (groups: {[g.name for g in groups]})")


def register(tool, state) -> None:
    ns, limits = state.namespaces, state.limits
    Count = Annotated[
        int, Field(ge=1, le=limits.records, description=f"entries at most: 1..{limits.records} (STREAMMACHINE_RECORDS)")
    ]

    @tool(title="Consumer groups", example={"stream": "orders"}, **READ)
    async def stream_groups(stream: StreamName) -> StreamGroups:
        """A stream's consumer groups with their consumers: pending entries and idle time (ms) of each."""
        client = await state.client()
        await require_stream(client, ns.stream(stream))
        return StreamGroups(stream=stream, groups=await group_infos(client, stream, True))

    @tool(title="Pending entries", example={"stream": "orders", "group": "billing", "count": 20}, **READ)
    async def stream_pending(
        stream: StreamName,
        group: GroupName,
        count: Count = limits.default_count(50),
        consumer: Annotated[Optional[str], Field(description="only this consumer's entries")] = None,
        cursor: Cursor = None,
    ) -> PendingResult:
        """Entries delivered to a consumer group but not acknowledged (XPENDING): who holds them, idle ms, deliveries.

        Oldest first, at most `count`; `next_cursor` continues.
        """
        start = "-" if cursor is None else stream_id("cursor", cursor, special=())
        client = await state.client()
        await require_group(client, ns.stream(stream), group)
        summary = await client.xpending(stream, group)
        rows = await client.xpending_range(stream, group, min=start, max="+", count=count + 1, consumername=consumer)
        entries = [
            PendingEntry(
                id=text(r["message_id"]),
                consumer=text(r["consumer"]),
                idle_ms=r["time_since_delivered"],
                deliveries=r["times_delivered"],
            )
            for r in rows[:count]
        ]
        return PendingResult(
            stream=stream,
            group=group,
            pending=summary["pending"],
            min_id=as_text(summary.get("min")),
            max_id=as_text(summary.get("max")),
            per_consumer={text(c["name"]): int(c["pending"]) for c in summary.get("consumers") or []},
            entries=entries,
            next_cursor="(" + entries[-1].id if len(rows) > count else None,
        )

    @tool(
        title="Create a consumer group",
        example={"stream": "orders", "group": "audit", "start_id": "0"},
        **hints(idempotent=True),
    )
    async def stream_group_create(
        stream: StreamName,
        group: GroupName,
        start_id: Annotated[
            str, Field(description="'$' = only entries added from now on, '0' = the whole stream, or an entry id")
        ] = "$",
        mkstream: Annotated[bool, Field(description="create the stream (empty) when it does not exist")] = False,
    ) -> GroupCreated:
        """Create a consumer group on a stream (XGROUP CREATE); an existing group is left as it is (created: false)."""
        start_id = stream_id("start_id", start_id, special=("$", "0"), exclusive=False)
        client = await state.client()
        if not mkstream:
            await require_stream(client, ns.stream(stream))
        try:
            await client.xgroup_create(ns.stream(stream), group, id=start_id, mkstream=mkstream)
        except ResponseError as exc:
            if "BUSYGROUP" in str(exc):
                return GroupCreated(stream=stream, group=group, created=False)
            raise
        return GroupCreated(stream=stream, group=group, created=True)

    @tool(
        title="Destroy a consumer group", example={"stream": "orders", "group": "audit", "confirm": True}, **OVERWRITE
    )
    async def stream_group_destroy(stream: StreamName, group: GroupName, confirm: Confirm = False) -> GroupDestroyed:
        """Destroy a consumer group (XGROUP DESTROY): its consumers and pending entries go; the stream stays.

        Needs confirm: true; without it, says what would be dropped.
        """
        client = await state.client()
        info = await require_group(client, ns.stream(stream), group)
        if confirm is not True:
            raise ToolError(
                f"stream_group_destroy would remove group {group!r} of {stream!r} with {info.consumers} consumer(s) "
                f"and {info.pending} pending entr{'y' if info.pending == 1 else 'ies'}; call it again with confirm: "
                "true to go ahead"
            )
        destroyed = bool(await client.xgroup_destroy(stream, group))
        return GroupDestroyed(stream=stream, group=group, destroyed=destroyed, dropped_pending=info.pending)

    @tool(
        title="Move a consumer group",
        example={"stream": "orders", "group": "billing", "to": "1h ago", "confirm": True},
        **OVERWRITE,
    )
    async def stream_group_reset(
        stream: StreamName,
        group: GroupName,
        to: Annotated[
            str,
            Field(
                min_length=1,
                max_length=64,
                description="'start', 'end' (new entries only), an entry id or ms time, an ISO 8601 time "
                "('2024-05-01T10:00:00Z') or an age ('15m ago')",
            ),
        ],
        drop_pending: Annotated[bool, Field(description="also acknowledge every entry pending in the group")] = False,
        confirm: Confirm = False,
    ) -> GroupReset:
        """Move a consumer group so its next read starts at `to` (XGROUP SETID): the entries in between are read
        again (moving back) or skipped (moving forward); pending entries stay pending unless `drop_pending`.

        Needs confirm: true; without it, says where the group is and where it would go.
        """
        if re.fullmatch(r"\d+(-\d+)?", to.strip()):  # an id or ms time: a seconds value is refused
            stream_id("to", to.strip(), special=(), exclusive=False)
        try:
            position = positions.parse_position(to)
        except ValueError as exc:
            raise ToolError(f"to: {exc}") from None
        client = await state.client()
        info = await require_group(client, ns.stream(stream), group)
        if confirm is not True:
            where = {"start": "the first entry", "end": "only entries added from now on"}.get(
                position.kind, f"entry {position.first} (or the first one after it)"
            )
            pending = (
                f"acknowledge its {info.pending} pending entries"
                if drop_pending
                else f"leave its {info.pending} pending entries pending"
            )
            raise ToolError(
                f"stream_group_reset would move group {group!r} of {stream!r} (last delivered "
                f"{info.last_delivered_id}) to {where} and {pending}; call it again with confirm: true"
            )
        result = await positions.reset_group(client, stream, group, to, drop_pending=drop_pending)
        return GroupReset(
            stream=stream,
            group=group,
            was=result["was"],
            now=result["now"],
            next_id=result["next_id"],
            pending=int(result["pending"]),
            dropped_pending=result["dropped_pending"],
            lag=result["lag"],
        )

    @tool(
        title="Consume through a group",
        example={"stream": "orders", "group": "audit", "consumer": "assistant", "count": 10},
        **ADD,
    )
    async def stream_group_read(
        stream: StreamName,
        group: GroupName,
        consumer: ConsumerName = "mcp",
        count: Count = limits.default_count(10),
        pending: Annotated[
            bool, Field(description="re-read this consumer's own pending entries instead of new ones")
        ] = False,
    ) -> GroupRead:
        """Read entries as a group's consumer (XREADGROUP, no blocking): new ones, or with `pending` its own
        unacknowledged ones again.

        Each entry returned stays pending for this consumer until stream_group_ack acknowledges it. Every
        delivered entry is in the result; values are cut (see `truncated_fields`) when they do not fit the limit.
        """
        client = await state.client()
        await require_group(client, ns.stream(stream), group)
        reply = await client.xreadgroup(group, consumer, {stream: "0" if pending else ">"}, count=count)
        rows = entry_rows(single_stream_entries(reply))
        share = limits.page_budget // max(1, len(rows))
        page, truncated = pack(rows, len(rows) * share, share=share)
        if len(page) < len(rows):  # every delivered entry must reach the caller, or it could never be acked
            raise ToolError(f"{len(rows)} entries do not fit one result; read with a smaller count")
        entries = [Entry(**row) for row in page]
        return GroupRead(
            stream=stream, group=group, consumer=consumer, count=len(entries), entries=entries, truncated=truncated
        )

    @tool(
        title="Acknowledge entries",
        example={"stream": "orders", "group": "audit", "ids": ["1700000000000-0"]},
        **OVERWRITE,
    )
    async def stream_group_ack(
        stream: StreamName,
        group: GroupName,
        ids: Annotated[List[str], Field(min_length=1, max_length=limits.records, description="entry ids to ack")],
    ) -> Acked:
        """Acknowledge entries of a consumer group (XACK): they are no longer pending and will not be redelivered."""
        checked = [stream_id("ids", i, special=(), exclusive=False) for i in ids]
        client = await state.client()
        await require_group(client, ns.stream(stream), group)
        return Acked(stream=stream, group=group, acked=await client.xack(stream, group, *checked))

    @tool(title="Trim a stream", example={"stream": "ticks", "maxlen": 100000, "confirm": True}, **OVERWRITE)
    async def stream_trim(
        stream: StreamName,
        maxlen: Annotated[Optional[int], Field(ge=0, description="keep at most this many newest entries")] = None,
        minid: Annotated[Optional[str], Field(description="delete the entries older than this id or ms time")] = None,
        confirm: Confirm = False,
    ) -> Trimmed:
        """Delete a stream's oldest entries (XTRIM, exact): down to `maxlen` entries, or those older than `minid`.

        Needs confirm: true; without it, says how many entries would go. Entries pending in a group are deleted
        too (their group still lists the ids).
        """
        if (maxlen is None) == (minid is None):
            raise ToolError("stream_trim takes exactly one of maxlen (entries to keep) or minid (oldest id to keep)")
        oldest_kept = "" if minid is None else stream_id("minid", minid, special=(), exclusive=False)
        client = await state.client()
        await require_stream(client, ns.stream(stream))
        length = await client.xlen(stream)
        if confirm is not True:
            if maxlen is not None:
                would = f"{max(0, length - maxlen)} of {length} entries"
            else:
                older = len(await client.xrange(stream, max="(" + oldest_kept, count=limits.records + 1))
                would = (
                    f"{'more than ' if older > limits.records else ''}{min(older, limits.records)} of {length} entries"
                )
            raise ToolError(f"stream_trim would delete {would} of {stream!r}; call it again with confirm: true")
        if maxlen is not None:
            removed = await client.xtrim(stream, maxlen=maxlen, approximate=False)
        else:
            removed = await client.xtrim(stream, minid=oldest_kept, approximate=False)
        return Trimmed(stream=stream, removed=removed, length=await client.xlen(stream))
