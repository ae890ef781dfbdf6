"""Dead letters through MCP: list, show, replay and purge (``streammachine.redis.deadletters`` does the work).

Replay and purge need ``confirm: true`` (without it they say what they would
do) and read-only mode does not register them. Every stream named (the
stream, its dead-letter stream, a replay target) stays in the stream namespace.
"""

# no `from __future__ import annotations`: the SDK evaluates tool signatures in module globals, and the
# count types below are built per server (they follow STREAMMACHINE_RECORDS)
from typing import Annotated, Awaitable, List, Optional, TypeVar

from mcp.server.mcpserver.exceptions import ToolError
from pydantic import Field

from streammachine.mcp.arguments import Confirm, Cursor, stream_id
from streammachine.mcp.limits import pack
from streammachine.mcp.models import DeadLetter, DeadLetters, DeadLettersPurged, DeadLettersReplayed, ReplayedEntry
from streammachine.mcp.tooling import OVERWRITE, READ, hints
from streammachine.redis import deadletters as core

LISTED = 1000  # replayed entries listed one by one in a result (the count covers all)
T = TypeVar("T")

Stream = Annotated[
    str,
    Field(
        min_length=1,
        max_length=1024,
        description="the stream whose dead letters these are ('orders'), or the dead-letter stream ('orders:dead')",
    ),
]
DeadLetterStream = Annotated[
    Optional[str], Field(description="override when the agent set ConsumerConfig.dead_letter_stream")
]
DeadLetterId = Annotated[str, Field(min_length=1, max_length=64, description="an id in the dead-letter stream")]


def as_model(row: dict) -> DeadLetter:
    """A core ``DeadLetter`` (as a dict, maybe cut by ``pack``) as the tools return it."""
    return DeadLetter(
        id=row["id"],
        original_id=row["original_id"],
        stream=row["stream"],
        group=row["group"],
        agent=row["agent"],
        error=row["error"],
        deliveries=row["deliveries"],
        at=row["time"],
        fields=row["fields"],
        truncated_fields=row.get("truncated_fields"),
    )


async def _core(call: Awaitable[T]) -> T:
    """A core call, its KeyError (no such id, not a stream) as the caller's tool error."""
    try:
        return await call
    except KeyError as exc:
        raise ToolError(str(exc)) from None


def register(tool, state) -> None:
    ns, limits = state.namespaces, state.limits
    Count = Annotated[
        int, Field(ge=1, le=limits.records, description=f"entries at most: 1..{limits.records} (STREAMMACHINE_RECORDS)")
    ]
    Ids = Annotated[
        Optional[List[str]],
        Field(min_length=1, max_length=limits.records, description="dead-letter ids (omit: every dead letter)"),
    ]

    def dead_stream(stream: str, dead_letter_stream: Optional[str]) -> str:
        ns.stream(stream)
        return ns.stream(core.dead_letter_stream_of(stream, dead_letter_stream), "dead_letter_stream")

    @tool(title="Dead letters", example={"stream": "orders", "count": 20}, **READ)
    async def stream_dead_letters(
        stream: Stream,
        count: Count = limits.default_count(50),
        dead_letter_stream: DeadLetterStream = None,
        cursor: Cursor = None,
    ) -> DeadLetters:
        """Read the dead-letter stream ('{stream}:dead'): entries that failed max_deliveries times, with the error,
        the agent, the deliveries and the original fields (as stream_dead_letter_replay would send them).

        Oldest first, at most `count` and the result limit; `next_cursor` continues.
        """
        start = "-" if cursor is None else stream_id("cursor", cursor, special=())
        dead = dead_stream(stream, dead_letter_stream)
        client = await state.client()
        letters = await _core(
            core.list_dead_letters(client, stream, start=start, count=count + 1, dead_letter_stream=dead)
        )
        rows = [letter.to_dict() for letter in letters[:count]]
        page, truncated = pack(rows, limits.page_budget)
        more = len(letters) > count or len(page) < len(rows)
        return DeadLetters(
            stream=stream,
            dead_letter_stream=dead,
            length=await _core(core.count_dead_letters(client, stream, dead_letter_stream=dead)),
            entries=[as_model(row) for row in page],
            next_cursor="(" + page[-1]["id"] if more and page else None,
            truncated=truncated,
        )

    @tool(title="Show a dead letter", example={"stream": "orders", "id": "1700000000000-0"}, **READ)
    async def stream_dead_letter_show(
        stream: Stream, id: DeadLetterId, dead_letter_stream: DeadLetterStream = None
    ) -> DeadLetter:
        """One dead letter in full: its error, agent, group, deliveries, when (epoch s) and original fields."""
        entry = stream_id("id", id, special=(), exclusive=False)
        dead = dead_stream(stream, dead_letter_stream)
        letter = await _core(core.show_dead_letter(await state.client(), stream, entry, dead_letter_stream=dead))
        if letter is None:
            raise ToolError(f"dead-letter stream {dead!r} has no entry {id}; stream_dead_letters lists them")
        (row,), _ = pack([letter.to_dict()], limits.page_budget, share=limits.page_budget)
        return as_model(row)

    @tool(
        title="Replay dead letters",
        example={"stream": "orders", "ids": ["1700000000000-0"], "confirm": True},
        **hints(destructive=True),
    )
    async def stream_dead_letter_replay(
        stream: Stream,
        ids: Ids = None,
        target: Annotated[
            Optional[str], Field(min_length=1, description="send them to this stream instead of their own")
        ] = None,
        dead_letter_stream: DeadLetterStream = None,
        confirm: Confirm = False,
    ) -> DeadLettersReplayed:
        """Send dead letters back to the stream they came from (or `target`) with their original fields, and remove
        them from the dead-letter stream: in one atomic step per entry where both share a slot, so none is lost or
        sent twice. Fix the handler first, or they fail again. `ids` omitted: every dead letter there now.

        Needs confirm: true; without it, says what would be sent where.
        """
        checked = None if ids is None else [stream_id("ids", i, special=(), exclusive=False) for i in ids]
        dead = dead_stream(stream, dead_letter_stream)
        if target is not None:
            ns.stream(target, "target")
        client = await state.client()
        if confirm is not True:
            if checked is None:
                what = (
                    f"all {await _core(core.count_dead_letters(client, stream, dead_letter_stream=dead))} dead letters"
                )
            else:
                what = f"{len(await _core(core.find_dead_letters(client, stream, checked, dead_letter_stream=dead)))} dead letter(s)"
            to = f"to {target!r}" if target else "to the streams they came from"
            raise ToolError(
                f"stream_dead_letter_replay would send {what} of {dead!r} {to} and remove them from {dead!r}; "
                "call it again with confirm: true"
            )
        settings = state.settings
        result = await _core(
            core.replay_dead_letters(
                client,
                stream,
                checked,
                target=target,
                dead_letter_stream=dead,
                check_target=lambda name: ns.stream(name, "the stream a dead letter names (_dlq_stream)"),
                maxlen=settings.stream_maxlen,
                max_age=settings.stream_max_age,
            )
        )
        per_stream: dict = {}
        for replayed in result.replayed:
            per_stream[replayed.stream] = per_stream.get(replayed.stream, 0) + 1
        return DeadLettersReplayed(
            dead_letter_stream=dead,
            replayed=result.count,
            per_stream=per_stream,
            entries=[ReplayedEntry(**r._asdict()) for r in result.replayed[:LISTED]],
            missing=result.missing[:LISTED],
            busy=result.busy[:LISTED],
            atomic=result.atomic,
            truncated=max(result.count, len(result.missing), len(result.busy)) > LISTED,
            length=await _core(core.count_dead_letters(client, stream, dead_letter_stream=dead)),
        )

    @tool(
        title="Purge dead letters",
        example={"stream": "orders", "before": "1700000000000", "confirm": True},
        **OVERWRITE,
    )
    async def stream_dead_letter_purge(
        stream: Stream,
        ids: Ids = None,
        before: Annotated[
            Optional[str], Field(description="delete those older than this id or ms time ('1700000000000-0')")
        ] = None,
        dead_letter_stream: DeadLetterStream = None,
        confirm: Confirm = False,
    ) -> DeadLettersPurged:
        """Delete dead letters for good: `ids`, those older than `before`, or (neither given) all of them.

        Needs confirm: true; without it, says how many would go.
        """
        if ids is not None and before is not None:
            raise ToolError("stream_dead_letter_purge takes ids or before (or neither: all), not both")
        checked = None if ids is None else [stream_id("ids", i, special=(), exclusive=False) for i in ids]
        oldest_kept = None if before is None else stream_id("before", before, special=(), exclusive=False)
        dead = dead_stream(stream, dead_letter_stream)
        client = await state.client()
        if confirm is not True:
            if checked is not None:
                what = f"{len(await _core(core.find_dead_letters(client, stream, checked, dead_letter_stream=dead)))} dead letter(s)"
            elif oldest_kept is not None:
                older = await _core(
                    core.list_dead_letters(
                        client, stream, end="(" + oldest_kept, count=limits.records + 1, dead_letter_stream=dead
                    )
                )
                what = f"{'more than ' if len(older) > limits.records else ''}{min(len(older), limits.records)} dead letter(s)"
            else:
                what = (
                    f"all {await _core(core.count_dead_letters(client, stream, dead_letter_stream=dead))} dead letters"
                )
            raise ToolError(
                f"stream_dead_letter_purge would delete {what} of {dead!r}; call it again with confirm: true"
            )
        removed = await _core(
            core.purge_dead_letters(client, stream, checked, before=oldest_kept, dead_letter_stream=dead)
        )
        return DeadLettersPurged(
            dead_letter_stream=dead,
            removed=removed,
            length=await _core(core.count_dead_letters(client, stream, dead_letter_stream=dead)),
        )
