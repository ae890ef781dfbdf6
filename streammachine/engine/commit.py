"""One commit per read: a stage's outputs, its table changes and the XACK of their entries, in one step.

The commit is a Lua script (a MULTI would not do: it cannot check anything
before writing, and a runtime error inside it does not undo the commands
around it). In one atomic step, in one round trip, it:

1. checks that every table key the read used still has the version it saw;
   otherwise nothing is written (``conflict``) and the current values come
   back, so the consumer can refresh them and handle the read again;
2. checks that the keys it writes are of the right type (so nothing fails
   half-way);
3. XACKs each unit's entries and XADDs the unit's outputs only when they
   were still pending: an entry acknowledged already (a retried commit
   whose first attempt went through although its reply was lost, or an
   entry another consumer claimed and committed) has its outputs skipped,
   never doubled. (Checking all entries in one command first costs the
   server more than it saves: XCLAIM propagates one command per entry, and
   an XACK costs per entry about what a call does.) Table changes cannot
   be split by entry (a read's units see each other's writes), and the
   versions alone do not protect them: the second handling of an entry may
   have seen the first one's commit (a consumer that claimed its own entry
   while their commit waited, then sent that commit first). So a read that
   changes tables first makes sure every entry is still pending (one
   XPENDING of this consumer's range in the common case); otherwise
   nothing is written (``stale``) and the consumer handles the entries
   still pending again;
4. writes the table changes (version + 1).

So after any crash each input entry has exactly one set of outputs and
table changes: its commit either happened with its ack or not at all (then
the entry is still pending and is handled again). That holds when every key
lives in one hash slot: always on a single server; on a cluster when the
input stream, output streams and tables share a hash tag. Otherwise
(``plan_crosses_slots``) outputs are written first, with a ``_source`` field
naming the input entry (a dedupe key), then the entries are acknowledged:
at least once. Tables must share the input stream's slot.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

from streammachine.engine.effects import DELETED, ReadEffects
from streammachine.redis.entries import as_text

_SCRIPT = r"""
local stream, group, consumer, maxlen = KEYS[1], ARGV[1], ARGV[2], ARGV[3]
local n_tables, n_ids = tonumber(ARGV[4]), tonumber(ARGV[5])
local ids_at = 6
local ids_end = ids_at + n_ids - 1
local units_at = ids_end + 1 -- '': every unit one entry with one output; else "entries outputs ..." per unit
local shape = {} -- KEYS index and field count of every output, or of all of them when they are alike
for n in string.gmatch(ARGV[units_at + 1], '%d+') do shape[#shape + 1] = tonumber(n) end
local n_checks = tonumber(ARGV[units_at + 2])
local checks_at = units_at + 3
local n_writes = tonumber(ARGV[checks_at + 3 * n_checks])
local writes_at = checks_at + 3 * n_checks + 1
local outputs_at = writes_at + 3 * n_writes
local CHUNK = 4000 -- ids per XACK: unpack() is bounded by the Lua C stack
-- 1. the versions the read relied on: nothing is written when one changed
local conflicts = {'conflict'}
for c = 0, n_checks - 1 do
    local at = checks_at + 3 * c
    local current = redis.call('HGET', KEYS[tonumber(ARGV[at])], ARGV[at + 1])
    local version = '0'
    if current then version = string.match(current, '^(%d+)|') or '0' end
    if version ~= ARGV[at + 2] then
        conflicts[#conflicts + 1] = ARGV[at]
        conflicts[#conflicts + 1] = ARGV[at + 1]
        conflicts[#conflicts + 1] = current or ''
    end
end
if #conflicts > 1 then return conflicts end
-- 2. the kinds of the keys written, so nothing fails half-way
for i = 2, #KEYS do
    local kind = redis.call('TYPE', KEYS[i])['ok']
    local expected = 'stream'
    if i <= 1 + n_tables then expected = 'hash' end
    if kind ~= 'none' and kind ~= expected then
        return redis.error_reply('WRONGTYPE ' .. KEYS[i] .. ' holds a ' .. kind .. ', not a ' .. expected .. ': nothing written')
    end
end
-- 3. outputs and acks, per unit: its XACK says whether its entries were still pending, and only then its
-- outputs go out. An entry acknowledged already (handled twice: claimed while the commit of its first handling
-- waited, or a commit sent again after a lost reply) has had its outputs; a unit with no entries (a periodic
-- hook) always writes. A read that changes tables first makes sure every entry is still pending (they cannot be
-- split by entry, and this read may have seen the other handling's changes, so every version matches): one
-- XPENDING of this consumer's range answers in the common case, one per entry otherwise.
if n_writes > 0 and n_ids > 0 then
    local rows = redis.call('XPENDING', stream, group, ARGV[ids_at], ARGV[ids_end], 2 * n_ids + 16, consumer)
    local all = #rows == n_ids
    for i = 1, #rows do
        if not all then break end
        all = rows[i][1] == ARGV[ids_at + i - 1]
    end
    if not all then
        local stale = {'stale'}
        for i = ids_at, ids_end do
            if #redis.call('XPENDING', stream, group, ARGV[i], ARGV[i], 1) == 0 then stale[#stale + 1] = ARGV[i] end
        end
        if #stale > 1 then return stale end
    end
end
local function xadd(key, first, last)
    if maxlen == '' then
        redis.call('XADD', key, '*', unpack(ARGV, first, last))
    else
        redis.call('XADD', key, 'MAXLEN', '~', maxlen, '*', unpack(ARGV, first, last))
    end
end
local acked, q = 0, outputs_at
if ARGV[units_at] == '' then -- every unit one entry with one output
    local key, width = KEYS[shape[1]], 2 * shape[2]
    for o = 1, n_ids do
        if #shape > 2 then key, width = KEYS[shape[2 * o - 1]], 2 * shape[2 * o] end
        if redis.call('XACK', stream, group, ARGV[ids_at + o - 1]) == 1 then
            acked = acked + 1
            xadd(key, q, q + width - 1)
        end
        q = q + width
    end
else
    local units = {}
    for n in string.gmatch(ARGV[units_at], '%d+') do units[#units + 1] = tonumber(n) end
    local i, o = ids_at, 0
    for u = 1, #units, 2 do
        local n_unit = units[u]
        local live = n_unit == 0
        for first = i, i + n_unit - 1, CHUNK do
            local n = redis.call('XACK', stream, group, unpack(ARGV, first, math.min(first + CHUNK - 1, i + n_unit - 1)))
            acked = acked + n
            live = live or n > 0
        end
        i = i + n_unit
        for _ = 1, units[u + 1] do
            o = o + 1
            local key, width = KEYS[shape[1]], 2 * shape[2]
            if #shape > 2 then key, width = KEYS[shape[2 * o - 1]], 2 * shape[2 * o] end
            if live then xadd(key, q, q + width - 1) end
            q = q + width
        end
    end
end
-- 4. table writes (the versions were checked: entries handled elsewhere meanwhile would have changed them)
for w = 0, n_writes - 1 do
    local at = writes_at + 3 * w
    redis.call('HSET', KEYS[tonumber(ARGV[at])], ARGV[at + 1], ARGV[at + 2])
end
return {'ok', n_ids - acked}
"""
SCRIPT = _SCRIPT
SCRIPT_SHA = hashlib.sha1(_SCRIPT.encode()).hexdigest()


@dataclass
class Outcome:
    """What a commit did: ``ok`` (``skipped``: entries acknowledged already), or nothing written: ``conflict``
    (a table changed meanwhile) or ``stale`` (``skipped`` entries acknowledged meanwhile)."""

    kind: str
    skipped: int = 0
    conflicts: List[Tuple[Any, str, Optional[bytes]]] = field(default_factory=list)  # (table, key, stored)


class CommitPlan:
    """The commit of one read's effects, as one EVALSHA command."""

    def __init__(
        self,
        effects: ReadEffects,
        *,
        stream: str,
        group: str,
        consumer: str,
        maxlen: Optional[int],
        entries: Sequence[Any] = (),
        deliveries: Optional[dict] = None,
        attempt: int = 0,
    ) -> None:
        self.effects = effects
        self.stream = stream
        # what a redo needs: the read's entries, their delivery counts, how many times it was redone
        self.entries, self.deliveries, self.attempt = list(entries), deliveries, attempt
        tables = list(dict.fromkeys(table for table, _ in effects.versions))  # hashes first: KEYS[2 .. 1+n]
        keys: Dict[str, int] = {stream: 1}
        for table in tables:
            keys.setdefault(table.key, len(keys) + 1)
        units = effects.units
        outputs = [output for unit in units for output in unit.outputs]
        for out_stream, _ in outputs:
            if out_stream not in keys:
                keys[out_stream] = len(keys) + 1
        shapes = [(keys[out_stream], len(fields)) for out_stream, fields in outputs]
        if shapes and shapes.count(shapes[0]) == len(shapes):  # all alike (one output stream, one record shape)
            shapes = shapes[:1]
        simple = len(outputs) == len(units) and all(len(unit.ids) == 1 and unit.outputs for unit in units)
        ids = effects.ids
        # Every argument is one Redis string the script gets for free; the structure (units, output shapes)
        # rides in two strings, so a read of n entries costs ~n ids + the output fields, nothing per entry more.
        args: List[Any] = [group, consumer, "" if maxlen is None else maxlen, len(tables), len(ids), *ids]
        args.append("" if simple else " ".join(f"{len(unit.ids)} {len(unit.outputs)}" for unit in units))
        args.append(" ".join(f"{index} {width}" for index, width in shapes))
        args.append(len(effects.versions))
        for (table, key), version in effects.versions.items():
            args.extend((keys[table.key], key, version))
        args.append(len(effects.overlay))
        self.written: List[Tuple[Any, str, int, Any, Optional[bytes]]] = []
        for (table, key), (value, encoded) in effects.overlay.items():
            version = effects.versions[(table, key)] + 1
            stored = b"%d||" % version if value is DELETED else b"%d|" % version + (encoded or b"")
            args.extend((keys[table.key], key, stored))
            self.written.append((table, key, version, value, encoded))
        args += [item for _, fields in outputs for pair in fields.items() for item in pair]
        self.table_by_key = {table.key: table for table in tables}
        self.keys = list(keys)
        self.command: List[Any] = ["EVALSHA", SCRIPT_SHA, len(self.keys), *self.keys, *args]

    def outcome(self, reply: Any) -> Outcome:
        """Read the script's reply; on success the tables take the written values as committed."""
        if as_text(reply[0]) == "ok":
            for table, key, version, value, encoded in self.written:
                table.apply_committed(key, version, value, encoded)
            return Outcome("ok", skipped=int(reply[1]))
        if as_text(reply[0]) == "stale":  # entries acknowledged meanwhile: nothing written
            return Outcome("stale", skipped=len(reply) - 1)
        conflicts = []
        for at in range(1, len(reply), 3):
            table = self.table_by_key[self.keys[int(reply[at]) - 1]]
            raw = reply[at + 2]
            conflicts.append((table, as_text(reply[at + 1]) or "", raw or None))
        return Outcome("conflict", conflicts=conflicts)


def refresh(outcome: Outcome) -> None:
    """Take the current stored values a ``conflict`` returned as committed."""
    for table, key, raw in outcome.conflicts:
        table.apply_stored(key, raw)


def unsafe_commands(
    effects: ReadEffects, *, stream: str, group: str, maxlen: Optional[int]
) -> Tuple[List[Sequence[Any]], List[Sequence[Any]]]:
    """The at-least-once commit for keys in several cluster slots: (the outputs, with a ``_source`` dedupe key;
    the acks), to send one after the other: an entry is acknowledged only once its outputs were written."""
    if effects.versions:
        raise ValueError(
            f"stream {stream!r}: a stage's tables must share the input stream's cluster slot "
            "(give them one hash tag, e.g. stream '{orders}' and app.table('{orders}:totals'))"
        )
    head = ("MAXLEN", "~", maxlen, "*") if maxlen is not None else ("*",)
    commands: List[Sequence[Any]] = []
    for unit in effects.units:
        source = f"{stream}/{as_text(unit.ids[0])}" if unit.ids else stream
        for n, (out_stream, fields) in enumerate(unit.outputs):
            args: List[Any] = ["XADD", out_stream, *head, "_source", f"{source}/{n}"]
            for pair in fields.items():
                args.extend(pair)
            commands.append(args)
    ids = effects.ids
    return commands, ([("XACK", stream, group, *ids)] if ids else [])
