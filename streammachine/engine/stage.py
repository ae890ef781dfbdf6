"""A stage's consumer: handler outputs and table changes committed with the ack, one commit per read.

``StageConsumer`` is a ``StreamConsumer`` whose agent declared ``output=``
or ``tables=``. Reading, retries, claims and dead letters are the base
class's; what changes is what happens to a read once its handlers ran:

- each handler call is a unit (``engine/effects.py``); its return value is
  routed to streams and its table writes held, a failing call's are dropped;
- the read's units become one ``CommitPlan`` (``engine/commit.py``), sent in
  front of the next XREADGROUP in the same round trip (reclaimed entries:
  at once), atomically with the XACK of the entries;
- a commit that finds a table changed meanwhile (``conflict``) or, changing
  tables, entries acknowledged meanwhile (``stale``) wrote nothing: the state is refreshed
  and the read's entries are handled again before the next read is looked at.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Callable, Dict, Optional, Tuple

from redis.exceptions import NoScriptError, ResponseError

from streammachine.engine.commit import SCRIPT, CommitPlan, Outcome, refresh, unsafe_commands
from streammachine.engine.consumer import StreamConsumer
from streammachine.engine.effects import ReadEffects, current_unit
from streammachine.engine.failures import failure_log, own_cancellation
from streammachine.message import received_messages
from streammachine.redis.entries import as_text
from streammachine.redis.transport import Transport, same_slot

log = logging.getLogger("streammachine.stage")

MAX_QUICK_REDOS = 5  # conflicts in a row handled at once; then with a growing pause (a hot key under contention)


class StageConsumer(StreamConsumer):
    errors_inline = True

    def __init__(self, *args: Any, maxlen: Optional[int] = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.maxlen = maxlen
        self.transport = Transport(self.client)
        self._commit: Optional[CommitPlan] = None
        self._warned_slots = False
        # a handler that reads (id, fields) pairs itself (a window stage) is spared the Message objects
        self._takes_entries = bool(getattr(self.spec.handler, "takes_entries", False))
        if self.spec.periodic is not None:
            self._periodic_due = time.monotonic() + self.spec.periodic[0]

    # -- handling ------------------------------------------------------------

    async def _process(self, entries: list, deliveries: Optional[dict]) -> None:
        if self._commit is not None:  # one plan in flight at a time, in read order
            await asyncio.shield(self._flush_commit())
        effects = await self._handle(entries, deliveries)
        if not effects.empty:
            self._queue(effects, entries, deliveries)
        if deliveries is not None and (self._commit is not None or self._to_ack):
            await asyncio.shield(self._flush_acks())

    async def _handle(self, entries: list, deliveries: Optional[dict]) -> ReadEffects:
        spec, stats = self.spec, self.stats
        effects = ReadEffects(spec.output, spec.tables)
        if self._takes_entries:
            messages = [entry if entry[1] is not None else None for entry in entries]
        else:
            messages = list(received_messages(spec.stream, self.name, time.time(), entries))
        self._inflight = [entry[0] for entry in entries]
        self._inflight_since = time.monotonic()
        started = time.perf_counter()
        try:
            if spec.batch:
                await self._handle_batch(effects, entries, messages, deliveries)
            else:
                for entry, message in zip(entries, messages):
                    if self._drop_rest:
                        break
                    if message is None:  # deleted while pending: nothing to handle, ack it with the commit
                        effects.acknowledge([entry[0]])
                    elif await self._run_unit(effects, [entry[0]], message, entry, deliveries):
                        stats.processed += 1
        finally:
            self._inflight = []
            stats.handler_seconds += time.perf_counter() - started
        return effects

    async def _handle_batch(self, effects: ReadEffects, entries: list, messages: list, deliveries: Any) -> None:
        ids = self._inflight
        if None in messages:  # some were deleted while pending: acknowledged with the commit, not handled
            effects.acknowledge([entry[0] for entry, message in zip(entries, messages) if message is None])
            entries = [entry for entry, message in zip(entries, messages) if message is not None]
            messages = [message for message in messages if message is not None]
            ids = [entry[0] for entry in entries]
        if not entries or self._drop_rest:
            return
        if await self._run_unit(effects, ids, messages, None, deliveries):
            self.stats.processed += len(ids)
            return
        for entry, message in zip(entries, messages):  # the batch failed: each entry alone, a poison one fails alone
            if await self._run_unit(effects, [entry[0]], [message], entry, deliveries):
                self.stats.processed += 1

    async def _run_unit(self, effects: ReadEffects, ids: list, argument: Any, entry: Any, deliveries: Any) -> bool:
        """Call the handler as one unit; True when it returned (its effects kept), False when it failed."""
        unit = effects.begin(ids)
        token = current_unit.set(unit)
        try:
            result = self._handler(argument)
            if self._is_async:
                result = await result
            effects.keep(unit, result)
            return True
        except (Exception, asyncio.CancelledError) as exc:
            if isinstance(exc, asyncio.CancelledError) and own_cancellation(self._stopping):
                raise
            if entry is not None:
                await self._failed(entry[0], entry[1], exc, deliveries)
            return False
        finally:
            current_unit.reset(token)

    async def _run_periodic(self) -> None:
        """The agent's periodic hook (``AgentSpec.periodic``), run in this task as a unit with no entries.

        In the consumer's own task, so it never interleaves with the handler
        (both may change the same in-memory state); its outputs and table
        writes are committed like a read's (with the next read).
        """
        interval, hook = self.spec.periodic  # type: ignore[misc]
        self._periodic_due = time.monotonic() + interval
        if self._commit is not None:
            await asyncio.shield(self._flush_commit())
        effects = ReadEffects(self.spec.output, self.spec.tables)
        unit = effects.begin([])
        token = current_unit.set(unit)
        try:
            result = hook()
            if asyncio.iscoroutine(result):
                result = await result
            effects.keep(unit, result)
        except Exception as exc:
            failure_log.record(
                f"agent {self.spec.name}",
                logging.ERROR,
                "periodic hook",
                "periodic hook %r failed (%s: %s); it runs again in %.1fs",
                hook,
                type(exc).__name__,
                exc,
                interval,
                exc_info=exc,
            )
            return
        finally:
            current_unit.reset(token)
        if unit.outputs or unit.writes:
            self._queue(effects, [], None)

    # -- committing ----------------------------------------------------------

    def _queue(self, effects: ReadEffects, entries: list, deliveries: Optional[dict], attempt: int = 0) -> None:
        self._commit = CommitPlan(
            effects, stream=self.spec.stream, group=self.spec.group, consumer=self.name, maxlen=self.maxlen,
            entries=entries, deliveries=deliveries, attempt=attempt,
        )  # fmt: skip

    def _take_pending(self) -> tuple:
        commands, ids = super()._take_pending()
        plan, self._commit = self._commit, None
        if plan is not None and self._crosses_slots(plan):
            self._commit = plan  # not atomic: sent on its own before the read (see _flush_commit)
            plan = None
        return ([plan.command] if plan is not None else []) + commands, (plan, ids)

    def _pending_failed(self, token: Any) -> None:
        plan, ids = token
        if plan is not None:
            self._commit = plan  # it may have gone through: sent again, it writes only for entries still pending
        super()._pending_failed(ids)

    async def _pending_sent(self, token: Any, replies: list) -> None:
        plan, ids = token
        if plan is not None:
            reply, replies = replies[0], replies[1:]
            await self._settle(plan, reply)
        errors = [r for r in replies if isinstance(r, Exception)]
        if errors:
            self._to_ack = ids + self._to_ack
            raise errors[0]
        await super()._pending_sent(ids, replies)
        if self._commit is not None:  # a redo queued by _settle: commit it before the next read is handled
            await self._flush_commit()

    async def _flush_acks(self) -> None:
        await self._flush_commit()
        await super()._flush_acks()

    async def _flush_commit(self) -> None:
        """Send the queued plan on its own (and any redo it leads to) until it is committed."""
        while self._commit is not None:
            plan, self._commit = self._commit, None
            try:
                reply = await self._send(plan)
            except BaseException:
                self._commit = plan
                raise
            await self._settle(plan, reply)

    async def _send(self, plan: CommitPlan) -> Any:
        """Send ``plan`` on its own; an error reply is returned (for ``_settle``), not raised."""
        if self._crosses_slots(plan):
            outputs, ack = unsafe_commands(
                plan.effects, stream=self.spec.stream, group=self.spec.group, maxlen=self.maxlen
            )
            try:
                await self.transport.send(outputs)  # every output written (or an error: no ack, all sent again)...
            except ResponseError as exc:
                return exc
            await self.transport.send(ack)  # ...before the entries are acknowledged
            return [b"ok", 0]
        try:
            return (await self.transport.send([plan.command]))[0]
        except NoScriptError:  # a new or restarted server: load the script once, send again
            await self.client.script_load(SCRIPT)
            return await self._send(plan)
        except ResponseError as exc:
            return exc

    async def _settle(self, plan: CommitPlan, reply: Any) -> None:
        if isinstance(reply, NoScriptError):  # a commit that rode with a read: send it again on its own
            reply = await self._send(plan)
        if isinstance(reply, Exception):
            self.stats.commit_failures += 1
            raise reply  # nothing was written; the entries stay pending and come back with the recovery
        outcome = plan.outcome(reply)
        if outcome.kind == "ok":
            self._forget_failures(plan.effects.ids)
            return
        refresh(outcome)  # the values Redis holds now (maybe this very commit's, when a resend found it done)
        if self._stopping:
            return  # nothing written: the entries stay pending for the next run
        await self._redo(plan, outcome)

    async def _redo(self, plan: CommitPlan, outcome: Outcome) -> None:
        """A table changed under the read, or some of its entries were acknowledged meanwhile: take the current
        values and handle its entries again.

        Only the entries still pending: one acknowledged meanwhile (an earlier
        attempt of this very commit whose reply was lost, or another consumer
        that claimed it) has had its effects, and must not have them twice.
        """
        self.stats.commit_retries += 1
        attempt = plan.attempt + 1
        if attempt > MAX_QUICK_REDOS:
            await asyncio.sleep(min(0.005 * 2 ** (attempt - MAX_QUICK_REDOS), 1.0))
        committed = {as_text(i) for i in plan.effects.ids}
        entries = [e for e in plan.entries if as_text(e[0]) in committed]
        entries = await self._still_pending(entries)
        log.debug("agent %s: commit %s; handling %d entries again", self.spec.name, outcome.kind, len(entries))
        if entries:
            effects = await self._handle(entries, plan.deliveries)
            if not effects.empty:
                self._queue(effects, entries, plan.deliveries, attempt)

    async def _still_pending(self, entries: list) -> list:
        if not entries:
            return entries
        ids = [as_text(e[0]) for e in entries]
        rows = await self.client.xpending_range(
            self.spec.stream, self.spec.group, min=ids[0], max=ids[-1], count=len(ids) * 4 + 100
        )
        pending = {as_text(row["message_id"]) for row in rows}
        return [e for e, i in zip(entries, ids) if i in pending]

    def _crosses_slots(self, plan: CommitPlan) -> bool:
        if same_slot(self.client, *plan.keys):
            return False
        if not self._warned_slots:
            self._warned_slots = True
            log.warning(
                "agent %s: its input, outputs and tables are in different cluster slots: outputs are written "
                "at least once, with a _source field to deduplicate (give them one hash tag for exactly once)",
                self.spec.name,
            )
        return True


def bind_window(
    window: Any,
    fn: Callable,
    *,
    stream: str,
    agent: str,
    table: Callable[[str], Any],
    previous: Any,
    wall_clock: Optional[float],
    others: Dict[str, Any],
) -> Tuple[Any, Optional[Tuple[float, Callable[[], Any]]]]:
    """``@app.agent(stream, window=..., wall_clock=...)``: the window's handler (streammachine.windows.stage)
    and its periodic hook. The handler adopts ``previous`` (the replaced agent's: a re-run cell keeps the
    rows it shows); ``others`` are the agent's options a window cannot take with it."""
    if window is None:
        raise ValueError(f"agent {agent!r}: wall_clock= closes windows: it needs window=")
    if not hasattr(window, "stage_handler"):
        raise TypeError(f"agent {agent!r}: window={window!r}, expected a Window (streammachine.windows)")
    if any(value not in (None, False) for value in others.values()):
        raise ValueError(
            f"agent {agent!r}: window= takes each read whole and runs its own periodic hook "
            "(wall_clock=): leave out batch=, threaded= and periodic="
        )
    handler = window.stage_handler(fn, stream=stream, agent=agent, table=table)
    handler.adopt(previous)
    return handler, None if wall_clock is None else (wall_clock, handler.advance)
