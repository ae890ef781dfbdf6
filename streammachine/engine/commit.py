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
   were still pending ("gated", for a retried commit, reclaimed entries and
   reads held past half the claim time; a fresh read committed sooner cannot
   have been claimed by anyone, and takes one XACK for all): an entry
   acknowledged already (a retried commit whose
   first attempt went through although its reply was lost, or an entry
   another consumer claimed and committed) has its outputs skipped, never
   doubled. Table changes cannot be split by entry (a read's units see each
   other's writes), and the versions alone do not protect them: the second
   handling of an entry may have seen the first one's commit (a consumer
   that claimed its own entry while their commit waited, then sent that
   commit first). So a gated read that changes tables first checks that
   every entry is still pending; otherwise nothing is written (``stale``)
   and the consumer handles the entries still pending again;
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
local stream, group, maxlen = KEYS[1], ARGV[1], ARGV[3]
local n_tables = tonumber(ARGV[4])
local p = 5
local n_units = tonumber(ARGV[p]); p = p + 1
local units = {}
for u = 1, n_units do
    local n_ids = tonumber(ARGV[p])
    local n_out = tonumber(ARGV[p + 1 + n_ids])
    units[u] = {p + 1, n_ids, p + 2 + n_ids, n_out}
    p = p + 2 + n_ids
    for o = 1, n_out do
        p = p + 2 + 2 * tonumber(ARGV[p + 1])
    end
end
local n_checks = tonumber(ARGV[p]); p = p + 1
local checks_at = p
p = p + 3 * n_checks
local n_writes = tonumber(ARGV[p]); p = p + 1
local writes_at = p
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
-- 1b. a gated read with table changes: every entry must still be pending. One acknowledged meanwhile (handled
-- twice: claimed while the commit of its first handling waited) had its changes already, and this read may
-- have seen them (then every version matches): nothing is written, the consumer handles the rest again.
if ARGV[2] == 'gated' and n_writes > 0 then
    local stale = {'stale'}
    for u = 1, n_units do
        local unit = units[u]
        for i = unit[1], unit[1] + unit[2] - 1 do
            if #redis.call('XPENDING', stream, group, ARGV[i], ARGV[i], 1) == 0 then stale[#stale + 1] = ARGV[i] end
        end
    end
    if #stale > 1 then return stale end
end
-- 2. the kinds of the keys written, so nothing fails half-way
for i = 2, #KEYS do
    local kind = redis.call('TYPE', KEYS[i])['ok']
    local expected = 'stream'
    if i <= 1 + n_tables then expected = 'hash' end
    if kind ~= 'none' and kind ~= expected then
        return redis.error_reply('WRONGTYPE ' .. KEYS[i] .. ' holds a ' .. kind .. ', not a ' .. expected .. ': nothing written')
    end
end
-- 3. outputs and acks. 'gated' (a retried commit, reclaimed entries, a read held past half the claim
-- time): per unit, the XACK says whether its entries were still pending, and only then its outputs go
-- out. 'fast' (fresh entries, committed well before anyone may claim them): one XACK, every output.
local function outputs(unit)
    local q = unit[3]
    for o = 1, unit[4] do
        local key, last = KEYS[tonumber(ARGV[q])], q + 1 + 2 * tonumber(ARGV[q + 1])
        if maxlen == '' then
            redis.call('XADD', key, '*', unpack(ARGV, q + 2, last))
        else
            redis.call('XADD', key, 'MAXLEN', '~', maxlen, '*', unpack(ARGV, q + 2, last))
        end
        q = last + 1
    end
end
local stale = 0
if ARGV[2] == 'gated' then
    for u = 1, n_units do
        local unit = units[u]
        local acked = unit[2]
        if acked > 0 then
            acked = redis.call('XACK', stream, group, unpack(ARGV, unit[1], unit[1] + unit[2] - 1))
        end
        if acked > 0 or unit[2] == 0 then outputs(unit) end
        stale = stale + unit[2] - acked
    end
else
    local ids = {}
    for u = 1, n_units do
        local unit = units[u]
        for i = unit[1], unit[1] + unit[2] - 1 do
            ids[#ids + 1] = ARGV[i]
            if #ids == 500 then
                stale = stale + 500 - redis.call('XACK', stream, group, unpack(ids))
                ids = {}
            end
        end
        outputs(unit)
    end
    if #ids > 0 then stale = stale + #ids - redis.call('XACK', stream, group, unpack(ids)) end
end
-- 4. table writes (the versions were checked: entries handled elsewhere meanwhile would have changed them)
for w = 0, n_writes - 1 do
    local at = writes_at + 3 * w
    redis.call('HSET', KEYS[tonumber(ARGV[at])], ARGV[at + 1], ARGV[at + 2])
end
return {'ok', stale}
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
        maxlen: Optional[int],
        entries: Sequence[Any] = (),
        deliveries: Optional[dict] = None,
        attempt: int = 0,
    ) -> None:
        self.effects = effects
        self.stream = stream
        # what a redo needs: the read's entries, their delivery counts, how many times it was redone
        self.entries, self.deliveries, self.attempt = list(entries), deliveries, attempt
        self.read_at = 0.0  # when its entries arrived (monotonic): a fast commit sent later must be gated
        keys: Dict[str, int] = {stream: 1}

        def index(key: str) -> int:
            return keys.setdefault(key, len(keys) + 1)

        tables = list(dict.fromkeys(table for table, _ in effects.versions))  # hashes first: KEYS[2 .. 1+n]
        for table in tables:
            index(table.key)
        # Every commit checks its entries one by one ("gated"). The one-XACK "fast" path trusted the client's clock
        # (a read committed within half the claim time cannot have been claimed), but a process stopped between
        # that check and the write (SIGSTOP, a VM pause) breaks it: the stage fault suite caught a duplicate.
        args: List[Any] = [group, "gated", "" if maxlen is None else maxlen, len(tables), len(effects.units)]
        for unit in effects.units:
            args.append(len(unit.ids))
            args.extend(unit.ids)
            args.append(len(unit.outputs))
            for out_stream, fields in unit.outputs:
                args.append(index(out_stream))
                args.append(len(fields))
                for pair in fields.items():
                    args.extend(pair)
        args.append(len(effects.versions))
        for (table, key), version in effects.versions.items():
            args.extend((index(table.key), key, version))
        args.append(len(effects.overlay))
        self.written: List[Tuple[Any, str, int, Any, Optional[bytes]]] = []
        for (table, key), (value, encoded) in effects.overlay.items():
            version = effects.versions[(table, key)] + 1
            stored = b"%d||" % version if value is DELETED else b"%d|" % version + (encoded or b"")
            args.extend((index(table.key), key, stored))
            self.written.append((table, key, version, value, encoded))
        self.table_by_key = {table.key: table for table in tables}
        self.keys = list(keys)
        self.command: List[Any] = ["EVALSHA", SCRIPT_SHA, len(self.keys), *self.keys, *args]
        self._mode_at = 3 + len(self.keys) + 1

    def gate(self) -> None:
        """Check every unit's entries one by one at commit (see step 3)."""
        self.command[self._mode_at] = "gated"

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

    def crosses_slots(self, same_slot: Any) -> bool:
        return not same_slot(*self.keys)


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
