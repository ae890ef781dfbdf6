"""Dead letters: the record format, and list, show, replay and purge. The one place that knows the format.

An agent whose handler keeps failing writes the entry to its dead-letter
stream (``ConsumerConfig.dead_letter_stream``, default ``{stream}:dead``):
the original fields, plus ``_dlq_stream``, ``_dlq_group``, ``_dlq_id``,
``_dlq_agent``, ``_dlq_error``, ``_dlq_deliveries`` and ``_dlq_at`` (epoch
seconds). A record's own ``_dlq_*`` fields (a replayed dead letter failing
again) are kept as ``_orig_dlq_*``. ``dead_letter_record`` builds that
record (the consumer calls it); ``original_fields`` undoes it: the fields
without ``_dlq_*``, each ``_orig_dlq_*`` back under its own name, so a
replay re-sends exactly what the agent first received.

Every front end (CLI ``streammachine dlq``, ``%streammachine dlq``, the MCP
tools, the dashboard) calls these coroutines; the CLI and the magics run
them over their sync client with ``*_sync`` (``sync.run_sync``).

``stream`` may name the original stream (``orders``: its dead letters are
in ``orders:dead``) or the dead-letter stream itself (a name ending in
``:dead``); ``dead_letter_stream=`` names one explicitly (an agent with its
own ``dead_letter_stream`` pattern).

Replay moves each entry in ONE step where the two streams share a slot, and
with a dedupe key across cluster slots (``deadletters_move.py``). New entries
are trimmed as ``producer`` trims every XADD (``xadd_options``):
``STREAMMACHINE_STREAM_MAXLEN`` / ``_MAX_AGE`` unless the caller says.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from redis.exceptions import ResponseError

from streammachine._speedups import decode_dict_bytes_to_utf8
from streammachine.config import ConsumerConfig, Settings
from streammachine.redis.deadletters_move import Replayed, ReplayResult, move
from streammachine.redis.entries import as_text
from streammachine.redis.inspect import NotAStream
from streammachine.redis.positions import minid_for_age, parse_id
from streammachine.redis.producer import xadd_options
from streammachine.redis.sync import awaitable, run_sync
from streammachine.redis.transport import Transport

__all__ = [
    "DeadLetter",
    "Replayed",
    "ReplayResult",
    "UnknownDeadLetter",
    "checked_id",
    "count_dead_letters",
    "count_dead_letters_sync",
    "dead_letter_record",
    "dead_letter_stream_of",
    "find_dead_letters",
    "list_dead_letters",
    "list_dead_letters_sync",
    "original_fields",
    "purge_dead_letters",
    "purge_dead_letters_sync",
    "replay_dead_letters",
    "replay_dead_letters_sync",
    "show_dead_letter",
    "show_dead_letter_sync",
]

PREFIX = b"_dlq_"
ORIGINAL_PREFIX = b"_orig" + PREFIX
SUFFIX = ConsumerConfig.dead_letter_stream.replace("{stream}", "")  # ":dead"
REPLAY_CHUNK = 200  # entries per script call: one short step on the server, however many dead letters
REPLAY_BYTES = 4 << 20  # field data per script call, at most (unless one entry is larger)

_FROM_SETTINGS: Any = object()


class UnknownDeadLetter(KeyError):
    """Ids that are not in the dead-letter stream; the message names them and the stream."""

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass
class DeadLetter:
    """One dead letter: where it came from, why it failed, and the original record."""

    id: str  # its id in the dead-letter stream
    dead_letter_stream: str
    stream: Optional[str]  # the stream it was read from (where a replay sends it)
    original_id: Optional[str]
    agent: Optional[str]
    group: Optional[str]
    error: Optional[str]
    deliveries: Optional[int]
    time: Optional[float]  # epoch seconds when it was dead-lettered
    fields: Dict[str, str] = field(default_factory=dict)  # the original record, as a replay re-sends it

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


# --- the record format ---------------------------------------------------------------------------------------


def _key(name: Union[str, bytes]) -> bytes:
    return name.encode() if isinstance(name, str) else name


def dead_letter_record(
    fields: Mapping, *, stream: str, group: str, entry_id: str, agent: str, error: str, deliveries: int
) -> Dict[bytes, Any]:
    """The dead-letter stream record of entry ``entry_id`` (``fields`` as read) that failed ``deliveries`` times."""
    record: Dict[bytes, Any] = {}
    for name, value in fields.items():
        name = _key(name)
        record[b"_orig" + name if name.startswith(PREFIX) else name] = value
    record.update(
        {
            PREFIX + b"stream": stream,
            PREFIX + b"group": group,
            PREFIX + b"id": entry_id,
            PREFIX + b"agent": agent,
            PREFIX + b"error": error[:4000],
            PREFIX + b"deliveries": deliveries,
            PREFIX + b"at": time.time(),
        }
    )
    return record


def original_fields(fields: Mapping) -> Dict[bytes, Any]:
    """A dead letter's fields as the agent first read them: no ``_dlq_*``, ``_orig_dlq_*`` renamed back."""
    original: Dict[bytes, Any] = {}
    for name, value in fields.items():
        name = _key(name)
        if name.startswith(ORIGINAL_PREFIX):
            original[name[len(b"_orig") :]] = value
        elif not name.startswith(PREFIX):
            original[name] = value
    return original


def _meta(fields: Mapping, name: str) -> Optional[str]:
    value = fields.get(PREFIX + name.encode())
    return None if value is None else as_text(value)


def parse(dead_letter_stream: str, entry_id: Any, raw: Mapping) -> DeadLetter:
    """One dead-letter stream entry (as XRANGE returns it) as a ``DeadLetter``."""
    fields = {_key(k): v for k, v in (raw or {}).items()}
    deliveries, at = _meta(fields, "deliveries"), _meta(fields, "at")
    try:
        when: Optional[float] = float(at) if at else None
    except ValueError:
        when = None
    return DeadLetter(
        id=as_text(entry_id) or "",
        dead_letter_stream=dead_letter_stream,
        stream=_meta(fields, "stream"),
        original_id=_meta(fields, "id"),
        agent=_meta(fields, "agent"),
        group=_meta(fields, "group"),
        error=_meta(fields, "error"),
        deliveries=int(deliveries) if deliveries and deliveries.isdigit() else None,
        time=when,
        fields=decode_dict_bytes_to_utf8(original_fields(fields)),
    )


def dead_letter_stream_of(stream: str, dead_letter_stream: Optional[str] = None) -> str:
    """The dead-letter stream for ``stream``: itself when it ends in ':dead', else ``{stream}:dead``."""
    if dead_letter_stream:
        return dead_letter_stream
    if not isinstance(stream, str) or not stream:
        raise ValueError(f"stream={stream!r}: expected a stream name such as 'orders' (or 'orders:dead')")
    return stream if stream.endswith(SUFFIX) else ConsumerConfig().dead_letter_for(stream)


def checked_id(what: str, value: Any) -> str:
    """``value`` as a full stream id ('1700000000000-0'; a bare ms time means its first entry)."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ValueError(f"{what}={value!r}: expected a stream id such as '1700000000000-0'")
    try:
        ms, seq = parse_id(str(value))
    except ValueError as exc:
        raise ValueError(f"{what}={value!r}: {exc}") from None
    return f"{ms}-{seq}"


def _range_bound(what: str, value: Any) -> str:
    if value in ("-", "+"):
        return value
    if isinstance(value, str) and value.startswith("("):
        return "(" + checked_id(what, value[1:])
    return checked_id(what, value)


async def _wrong_type(client: Any, exc: ResponseError, key: str) -> Exception:
    if str(exc).startswith("WRONGTYPE"):
        kind = as_text(await client.type(key))
        return NotAStream(f"key {key!r} is a Redis {kind}, not a stream of dead letters")
    return exc


# --- reading -------------------------------------------------------------------------------------------------


async def _xrange(client: Any, key: str, start: str, end: str, count: Optional[int]) -> List[Tuple[Any, Mapping]]:
    try:
        return await client.xrange(key, min=start, max=end, count=count)
    except ResponseError as exc:
        raise await _wrong_type(client, exc, key) from None


async def list_dead_letters(
    client: Any,
    stream: str,
    *,
    start: Any = "-",
    end: Any = "+",
    count: int = 100,
    dead_letter_stream: Optional[str] = None,
) -> List[DeadLetter]:
    """Dead letters of ``stream``, oldest first, at most ``count``; page on with ``start='(' + last.id``.

    A dead-letter stream that does not exist holds none; one of another type raises ``NotAStream``.
    """
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"count={count!r}: expected an integer >= 1")
    dead = dead_letter_stream_of(stream, dead_letter_stream)
    rows = await _xrange(client, dead, _range_bound("start", start), _range_bound("end", end), count)
    return [parse(dead, entry, fields) for entry, fields in rows]


async def count_dead_letters(client: Any, stream: str, *, dead_letter_stream: Optional[str] = None) -> int:
    dead = dead_letter_stream_of(stream, dead_letter_stream)
    try:
        return int(await client.xlen(dead))
    except ResponseError as exc:
        raise await _wrong_type(client, exc, dead) from None


async def show_dead_letter(
    client: Any, stream: str, entry_id: Any, *, dead_letter_stream: Optional[str] = None
) -> Optional[DeadLetter]:
    """The dead letter with id ``entry_id``, or None when the dead-letter stream has no such entry."""
    dead = dead_letter_stream_of(stream, dead_letter_stream)
    key = checked_id("id", entry_id)
    rows = await _xrange(client, dead, key, key, 1)
    return parse(dead, *rows[0]) if rows else None


async def _existing(client: Any, dead: str, ids: Sequence[str]) -> Dict[str, Mapping]:
    """The raw fields of each of ``ids`` still in ``dead`` (one round trip)."""
    try:
        replies = await Transport(client).send([("XRANGE", dead, i, i) for i in ids])
    except ResponseError as exc:
        raise await _wrong_type(client, exc, dead) from None
    found: Dict[str, Mapping] = {}
    for reply in replies:
        for entry, fields in reply:
            fields = fields if isinstance(fields, Mapping) else dict(zip(fields[::2], fields[1::2]))
            found[as_text(entry) or ""] = fields
    return found


async def _checked_ids(client: Any, dead: str, ids: Sequence[Any]) -> Dict[str, Mapping]:
    """The raw fields of each of ``ids``, in order; ``UnknownDeadLetter`` naming those not in ``dead``."""
    if isinstance(ids, (str, bytes)):
        ids = [ids]
    wanted = list(dict.fromkeys(checked_id("ids", i) for i in ids))
    if not wanted:
        raise ValueError("ids=[]: give the dead-letter ids to act on, or none at all (ids=None) for every one")
    found = await _existing(client, dead, wanted)
    unknown = [i for i in wanted if i not in found]
    if unknown:
        raise UnknownDeadLetter(
            f"dead-letter stream {dead!r} has no entr{'y' if len(unknown) == 1 else 'ies'} "
            f"{', '.join(unknown[:10])}{' ...' if len(unknown) > 10 else ''} (nothing was changed)"
        )
    return {i: found[i] for i in wanted}


async def find_dead_letters(
    client: Any, stream: str, ids: Sequence[Any], *, dead_letter_stream: Optional[str] = None
) -> List[DeadLetter]:
    """The dead letters ``ids``, in order; ``UnknownDeadLetter`` naming any that is not there (a preview)."""
    dead = dead_letter_stream_of(stream, dead_letter_stream)
    return [parse(dead, entry, raw) for entry, raw in (await _checked_ids(client, dead, ids)).items()]


# --- replay --------------------------------------------------------------------------------------------------


def trim_options(maxlen: Any = _FROM_SETTINGS, max_age: Any = _FROM_SETTINGS) -> Tuple[Any, ...]:
    """XADD's options for a replay (``producer.xadd_options``): the settings' trim rule unless one is given."""
    if maxlen is _FROM_SETTINGS or max_age is _FROM_SETTINGS:
        settings = Settings.from_env()
        if maxlen is _FROM_SETTINGS and max_age is _FROM_SETTINGS:
            maxlen, max_age = settings.stream_maxlen, settings.stream_max_age
        elif maxlen is _FROM_SETTINGS:
            maxlen = None
        else:
            max_age = None
    return xadd_options(maxlen, None if max_age is None else minid_for_age(max_age))


def _plan(dead: str, rows: Mapping[str, Mapping], target: Optional[str]) -> Dict[str, List[Tuple[str, Dict]]]:
    """Dead-letter ids and their original fields, by the stream each goes to."""
    plan: Dict[str, List[Tuple[str, Dict]]] = {}
    for dead_id, raw in rows.items():
        fields = {_key(k): v for k, v in raw.items()}
        to = target or _meta(fields, "stream")
        if not to:
            raise ValueError(
                f"entry {dead_id} of {dead!r} names no stream (_dlq_stream): not a dead letter; pass target="
            )
        record = original_fields(fields)
        if not record:
            raise ValueError(f"entry {dead_id} of {dead!r} has no fields of the original record to send")
        plan.setdefault(to, []).append((dead_id, record))
    return plan


def _by_size(entries: List[Tuple[str, Dict]]) -> List[List[Tuple[str, Dict]]]:
    """``entries`` in runs of at most ``REPLAY_BYTES`` of field data (one script call each)."""
    runs: List[List[Tuple[str, Dict]]] = [[]]
    size = 0
    for entry in entries:
        cost = sum(len(k) + len(v if isinstance(v, (bytes, str)) else str(v)) for k, v in entry[1].items())
        if runs[-1] and size + cost > REPLAY_BYTES:
            runs.append([])
            size = 0
        runs[-1].append(entry)
        size += cost
    return runs


async def _replay_rows(
    client: Any,
    dead: str,
    rows: Mapping[str, Mapping],
    target: Optional[str],
    options: tuple,
    result: ReplayResult,
    check_target: Optional[Callable[[str], Any]],
) -> None:
    plan = _plan(dead, rows, target)
    if check_target is not None:
        for to in plan:  # every stream of the chunk, before the first is written to
            check_target(to)
    for to, entries in plan.items():
        for run in _by_size(entries):
            await move(client, dead, to, run, options, result)


async def replay_dead_letters(
    client: Any,
    stream: str,
    ids: Optional[Sequence[Any]] = None,
    *,
    target: Optional[str] = None,
    dead_letter_stream: Optional[str] = None,
    maxlen: Any = _FROM_SETTINGS,
    max_age: Any = _FROM_SETTINGS,
    chunk: int = REPLAY_CHUNK,
    check_target: Optional[Callable[[str], Any]] = None,
) -> ReplayResult:
    """Send dead letters back to their streams (or to ``target``) and remove them from the dead-letter stream.

    ``ids=None``: every dead letter there now (not those dead-lettered again meanwhile). Given ids must all
    be there (``UnknownDeadLetter`` otherwise, nothing changed). ``maxlen``/``max_age``: the new entries'
    trim rule (default: STREAMMACHINE_STREAM_MAXLEN / _MAX_AGE, as every send). ``check_target(stream)``
    may refuse (raise) a stream a dead letter names (``_dlq_stream``) before anything is sent there.
    """
    dead = dead_letter_stream_of(stream, dead_letter_stream)
    options = trim_options(maxlen, max_age)
    result = ReplayResult(dead)
    if ids is not None:
        found = list((await _checked_ids(client, dead, ids)).items())
        for at in range(0, len(found), chunk):
            await _replay_rows(client, dead, dict(found[at : at + chunk]), target, options, result, check_target)
        return result
    last = await _xrevlast(client, dead)
    start = "-"
    while last is not None:
        batch = await _xrange(client, dead, start, last, chunk)
        if not batch:
            break
        rows = {as_text(entry) or "": fields for entry, fields in batch}
        await _replay_rows(client, dead, rows, target, options, result, check_target)
        start = "(" + as_text(batch[-1][0])  # type: ignore[operator]
    return result


async def _xrevlast(client: Any, dead: str) -> Optional[str]:
    try:
        rows = await client.xrevrange(dead, max="+", min="-", count=1)
    except ResponseError as exc:
        raise await _wrong_type(client, exc, dead) from None
    return as_text(rows[0][0]) if rows else None


# --- purge ---------------------------------------------------------------------------------------------------


async def purge_dead_letters(
    client: Any,
    stream: str,
    ids: Optional[Sequence[Any]] = None,
    *,
    before: Any = None,
    dead_letter_stream: Optional[str] = None,
) -> int:
    """Delete dead letters: ``ids``, or those older than ``before`` (an id or ms time), or all; how many went.

    Given ids must all be there (``UnknownDeadLetter`` otherwise, nothing deleted). The stream key stays
    (with any consumer group reading it): it is trimmed, not deleted.
    """
    dead = dead_letter_stream_of(stream, dead_letter_stream)
    if ids is not None and before is not None:
        raise ValueError("purge takes ids or before, not both")
    if ids is not None:
        wanted = await _checked_ids(client, dead, ids)
        return int(await client.xdel(dead, *wanted))
    try:
        if before is not None:
            return int(await client.xtrim(dead, minid=checked_id("before", before), approximate=False))
        return int(await client.xtrim(dead, maxlen=0, approximate=False))
    except ResponseError as exc:
        raise await _wrong_type(client, exc, dead) from None


# --- on a synchronous client (the CLI, the magics) -----------------------------------------------------------


def list_dead_letters_sync(client: Any, stream: str, **options: Any) -> List[DeadLetter]:
    return run_sync(list_dead_letters(awaitable(client), stream, **options))


def count_dead_letters_sync(client: Any, stream: str, **options: Any) -> int:
    return run_sync(count_dead_letters(awaitable(client), stream, **options))


def show_dead_letter_sync(client: Any, stream: str, entry_id: Any, **options: Any) -> Optional[DeadLetter]:
    return run_sync(show_dead_letter(awaitable(client), stream, entry_id, **options))


def replay_dead_letters_sync(
    client: Any, stream: str, ids: Optional[Sequence[Any]] = None, **options: Any
) -> ReplayResult:
    return run_sync(replay_dead_letters(awaitable(client), stream, ids, **options))


def purge_dead_letters_sync(client: Any, stream: str, ids: Optional[Sequence[Any]] = None, **options: Any) -> int:
    return run_sync(purge_dead_letters(awaitable(client), stream, ids, **options))
