"""Moving dead letters back to their stream: one atomic step per entry in one slot; across slots, with a dedupe key.

In one slot (always on one server; on a cluster when both names share a
hash tag, ``{orders}`` and ``{orders}:dead``) a Lua script XADDs the
original fields and XDELs the dead letter, only if the dead letter is still
there: a replayed entry is neither lost nor doubled, even when two replays
(or a replay and a purge) race. A MULTI could not check first, so both
racers would add it.

When a stream and its dead-letter stream hash to different slots (``orders``
and ``orders:dead`` on a cluster; hash-tag them, ``{orders}``, to avoid
this), nothing can add to one and delete from the other at once. So:

1. claim: in the dead-letter stream's slot, one script marks each dead
   letter still there as being moved, in a hash beside it
   (``{orders:dead}:replaying``: id -> the target's last id before the
   XADD | when), unless another replay marked it less than ``LEASE_MS`` ago
   (``busy``);
2. XADD the original fields to the stream (one MULTI: all of a chunk or
   none), each with ``_dlq_replay_of`` = ``<dead-letter stream>/<id>``;
3. XDEL the dead letters and drop their marks (one MULTI, one slot).

A replay cut between 2 and 3 leaves marks behind. The next replay (after
the lease) finds them and looks for the dedupe key among the entries the
stream received after the mark's id: an entry that got there is only
deleted from the dead-letter stream, never sent twice; one that did not is
sent. So, replays run again until done, every dead letter arrives once.
``_dlq_replay_of`` stays in the replayed entry (handlers see it); if it fails
again it is dead-lettered as ``_orig_dlq_replay_of`` and a replay restores it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, NamedTuple, Set, Tuple

from redis.crc import key_slot
from redis.exceptions import ResponseError

from streammachine.redis.entries import as_text
from streammachine.redis.inspect import NotAStream
from streammachine.redis.transport import Transport, same_slot

WIDE_FIELDS = 3000  # fields of one entry a script call takes (Lua's unpack stops near 8000 values)


class Replayed(NamedTuple):
    dead_letter_id: str
    stream: str  # where it went
    new_id: str  # its id there


@dataclass
class ReplayResult:
    dead_letter_stream: str
    replayed: List[Replayed] = field(default_factory=list)
    missing: List[str] = field(default_factory=list)  # gone by their turn: replayed or purged by someone else
    busy: List[str] = field(default_factory=list)  # cross-slot only: another replay is moving them right now
    atomic: bool = True  # False when some moved across cluster slots (XADD, then XDEL)

    @property
    def count(self) -> int:
        return len(self.replayed)

    def to_dict(self) -> Dict[str, Any]:
        return {
            "dead_letter_stream": self.dead_letter_stream,
            "replayed": [r._asdict() for r in self.replayed],
            "missing": self.missing,
            "busy": self.busy,
            "atomic": self.atomic,
        }


# KEYS[1] the dead-letter stream, KEYS[2] the stream to send to. ARGV[1] = n, ARGV[2..1+n] = XADD's options after
# the key (MAXLEN ~ N *), then per entry: its dead-letter id, its field count, its fields. Each entry is moved (XADD
# here, XDEL there) only when the dead letter is still there: a concurrent replay or purge got it otherwise ("").
_REPLAY = r"""
local kind = redis.call('TYPE', KEYS[2])['ok']
if kind ~= 'none' and kind ~= 'stream' then
    return redis.error_reply('WRONGTYPE key ' .. KEYS[2] .. ' is a Redis ' .. kind .. ', not a stream')
end
local n_head = tonumber(ARGV[1])
local head = {'XADD', KEYS[2]}
for i = 1, n_head do head[#head + 1] = ARGV[1 + i] end
local p, out = 2 + n_head, {}
while p <= #ARGV do
    local id, n = ARGV[p], tonumber(ARGV[p + 1])
    if #redis.call('XRANGE', KEYS[1], id, id) > 0 then
        local command = {unpack(head)}
        for i = 1, 2 * n do command[#command + 1] = ARGV[p + 1 + i] end
        out[#out + 1] = redis.call(unpack(command))
        redis.call('XDEL', KEYS[1], id)
    else
        out[#out + 1] = ''
    end
    p = p + 2 + 2 * n
end
return out
"""


async def _move_in_one_slot(
    client: Any, dead: str, to: str, entries: List[Tuple[str, Dict]], options: tuple
) -> List[Any]:
    args: List[Any] = [len(options), *options]
    for dead_id, record in entries:
        args += [dead_id, len(record)]
        for pair in record.items():
            args.extend(pair)
    try:
        return await client.eval(_REPLAY, 2, dead, to, *args)
    except ResponseError as exc:
        if str(exc).startswith("WRONGTYPE"):
            raise NotAStream(f"cannot replay into {to!r}: {str(exc).split(' ', 1)[1]}") from None
        raise


async def _move_wide(client: Any, dead: str, to: str, dead_id: str, record: Dict, options: tuple) -> Any:
    """An entry too wide for a script's arguments (Lua's unpack): XADD + XDEL in one MULTI, if still there.

    Atomic (never lost), but a replay racing this one between the check and the MULTI could send it too.
    """
    if not await client.xrange(dead, min=dead_id, max=dead_id, count=1):
        return None
    command: List[Any] = ["XADD", to, *options]
    for pair in record.items():
        command.extend(pair)
    new_id, _ = await Transport(client).send([command, ("XDEL", dead, dead_id)], atomic=True)
    return new_id


REPLAY_OF = b"_dlq_replay_of"
LEASE_MS = 60_000  # a mark younger than this belongs to a replay still running
SCAN_PAGE = 1000

# KEYS[1] dead-letter stream, KEYS[2] the marks hash. ARGV[1] the target's last id now, ARGV[2] lease ms, ARGV[3..] ids.
_CLAIM = r"""
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {}
for i = 3, #ARGV do
    local id = ARGV[i]
    if #redis.call('XRANGE', KEYS[1], id, id) == 0 then
        out[#out + 1] = 'missing'
    else
        local mark = redis.call('HGET', KEYS[2], id)
        if mark then
            local since, at = string.match(mark, '^(.*)|(%d+)$')
            if now - tonumber(at) < tonumber(ARGV[2]) then
                out[#out + 1] = 'busy'
            else
                redis.call('HSET', KEYS[2], id, since .. '|' .. now)
                out[#out + 1] = 'recover|' .. since
            end
        else
            redis.call('HSET', KEYS[2], id, ARGV[1] .. '|' .. now)
            out[#out + 1] = 'claimed'
        end
    end
end
return out
"""


def marks_key(dead: str) -> str:
    """A hash in ``dead``'s slot: its own hash tag, or the whole name made one."""
    opening = dead.find("{")
    closing = dead.find("}", opening + 1) if opening >= 0 else -1
    key = dead + ":replaying" if opening >= 0 and closing > opening + 1 else "{" + dead + "}:replaying"
    if key_slot(key.encode()) != key_slot(dead.encode()):
        raise ValueError(
            f"dead-letter stream {dead!r}: its name's braces leave no key in its cluster slot for replay marks; "
            "give it a hash tag ('{orders}:dead') or a name without braces"
        )
    return key


async def _last_id(client: Any, stream: str) -> str:
    try:
        info = await client.xinfo_stream(stream)
    except ResponseError as exc:
        if str(exc).startswith("WRONGTYPE"):
            raise NotAStream(f"cannot replay into {stream!r}: it holds another Redis type, not a stream") from None
        return "0-0"  # no such stream yet: everything in it will be newer
    return as_text(info["last-generated-id"]) or "0-0"


async def _already_sent(client: Any, stream: str, since: str, keys: Set[bytes]) -> Dict[bytes, str]:
    """Dedupe key -> entry id, for those of ``keys`` found in ``stream`` after ``since``."""
    found: Dict[bytes, str] = {}
    start = "(" + since
    while len(found) < len(keys):
        rows = await client.xrange(stream, min=start, max="+", count=SCAN_PAGE)
        for entry, fields in rows:
            mark = fields.get(REPLAY_OF, fields.get(REPLAY_OF.decode()))
            mark = mark.encode() if isinstance(mark, str) else mark
            if mark in keys:
                found[mark] = as_text(entry) or ""
        if len(rows) < SCAN_PAGE:
            break
        start = "(" + (as_text(rows[-1][0]) or "")
    return found


async def _move_across_slots(
    client: Any, dead: str, to: str, entries: List[Tuple[str, Dict]], options: tuple, result: ReplayResult
) -> None:
    """Replay ``entries`` ((dead-letter id, original fields)) from ``dead`` to ``to``, in another slot."""
    marks = marks_key(dead)
    since = await _last_id(client, to)
    ids = [dead_id for dead_id, _ in entries]
    states = [as_text(s) or "" for s in await client.eval(_CLAIM, 2, dead, marks, since, LEASE_MS, *ids)]
    recovering: Dict[str, List[bytes]] = {}
    for dead_id, state in zip(ids, states):
        if state.startswith("recover|"):
            recovering.setdefault(state.split("|", 1)[1], []).append(f"{dead}/{dead_id}".encode())
    sent: Dict[bytes, str] = {}
    for mark_since, keys in recovering.items():
        sent.update(await _already_sent(client, to, mark_since, set(keys)))
    commands, moving = [], []
    for (dead_id, record), state in zip(entries, states):
        if state == "missing":
            result.missing.append(dead_id)
        elif state == "busy":
            result.busy.append(dead_id)
        else:
            moving.append(dead_id)
            key = f"{dead}/{dead_id}".encode()
            if key in sent:  # an interrupted replay got it there already
                result.replayed.append(Replayed(dead_id, to, sent[key]))
                continue
            command: List[Any] = ["XADD", to, *options]
            for pair in {**record, REPLAY_OF: key}.items():
                command.extend(pair)
            commands.append((dead_id, command))
    if commands:
        new_ids = await Transport(client).send([c for _, c in commands], atomic=True)
        result.replayed += [Replayed(d, to, as_text(n) or "") for (d, _), n in zip(commands, new_ids)]
    if moving:
        await Transport(client).send([("XDEL", dead, *moving), ("HDEL", marks, *moving)], atomic=True)


async def move(
    client: Any, dead: str, to: str, entries: List[Tuple[str, Dict]], options: tuple, result: ReplayResult
) -> None:
    """Replay ``entries`` ((dead-letter id, original fields)) from ``dead`` to ``to``; note each in ``result``."""
    if not same_slot(client, dead, to):
        result.atomic = False
        await _move_across_slots(client, dead, to, entries, options, result)
        return
    narrow = [entry for entry in entries if len(entry[1]) <= WIDE_FIELDS]
    new_ids = dict(zip([e[0] for e in narrow], await _move_in_one_slot(client, dead, to, narrow, options)))
    for dead_id, record in entries:
        new_id = (
            new_ids[dead_id] if dead_id in new_ids else await _move_wide(client, dead, to, dead_id, record, options)
        )
        if new_id:
            result.replayed.append(Replayed(dead_id, to, as_text(new_id) or ""))
        else:
            result.missing.append(dead_id)
