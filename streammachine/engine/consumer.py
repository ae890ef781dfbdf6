"""One agent consumer: read, handle, ack, retry, dead-letter, claim.

Delivery is at-least-once. An entry is acknowledged only after its handler
returned; a failed entry stays pending and is retried (XCLAIM to itself, so
Redis counts the delivery) until ``max_deliveries``, then it is written to
the dead-letter stream and acknowledged in one MULTI. On start the consumer
first takes back its own pending entries; while running it reclaims entries
that dead consumers left idle (XAUTOCLAIM), and keeps its own slow in-flight
entries fresh so live work is not stolen. Connection loss means capped,
jittered backoff and a retry with the same consumer name.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import random
import time
from concurrent.futures import Executor
from typing import Any, List, Optional, cast

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from streammachine.engine.identity import dead_local_owner
from streammachine.engine.lograte import FailureLog
from streammachine.engine.specs import AgentSpec, AgentStats
from streammachine.message import received_messages
from streammachine.redis.connection import ensure_group
from streammachine.redis.entries import as_text, id_after, id_before, parse_stream_id, single_stream_entries
from streammachine.redis.resp import direct_pool, encode_command, encode_repeated, entries_with_fields, round_trip
from streammachine.redis.transport import same_slot
from streammachine.typed import InvalidMessage, typed_handler

log = logging.getLogger("streammachine.engine.consumer")
failures = FailureLog(log)  # one line per agent per interval, however fast its handler fails

TRANSIENT = (RedisConnectionError, RedisTimeoutError, ConnectionError, TimeoutError, OSError)
DLQ_PREFIX = b"_dlq_"


def _bytes_keys(fields: dict) -> dict:
    return {(k.encode() if isinstance(k, str) else k): v for k, v in fields.items()}


class HandlerCancelled(RuntimeError):
    """A handler raised CancelledError without the consumer being stopped: a failure like any other."""

    def __init__(self) -> None:
        super().__init__("the handler raised CancelledError (it awaited a task or future something else cancelled)")


def own_cancellation(stopping: bool) -> bool:
    """Whether a CancelledError in the consumer's task is its own cancellation (a stop), not a handler's.

    A handler that awaits a task something else cancelled raises CancelledError
    too: that is a handler failure (retry, dead letter), not a reason to end.
    """
    if stopping:
        return True
    task = asyncio.current_task()
    cancelling = getattr(task, "cancelling", None)  # Python 3.11+
    return cancelling is None or cancelling() > 0


class Backoff:
    """Capped exponential backoff with full jitter."""

    def __init__(self, base: float = 0.05, cap: float = 5.0) -> None:
        self.base, self.cap, self.attempt = base, cap, 0

    def next_delay(self) -> float:
        delay = random.uniform(self.base, min(self.cap, self.base * (2**self.attempt)))
        self.attempt = min(self.attempt + 1, 30)
        return delay

    def reset(self) -> None:
        self.attempt = 0


def _bind_handler(spec: AgentSpec, executor: Optional[Executor]):
    """The callable the consumer awaits or calls, and whether to await it.

    A ``threaded`` sync handler runs in ``executor`` (the App's thread pool),
    so a blocking handler neither stalls the event loop (a notebook kernel,
    the keep-alive of slow entries) nor other agents.
    """
    # typed messages (#15): a handler annotated with a model gets decoded instances (others: itself)
    handler = typed_handler(spec.handler, is_async=spec.is_async, batch=spec.batch, name=spec.name)
    if not spec.threaded:
        return handler, spec.is_async

    async def in_thread(argument):
        # the context travels with the call: a stage's tables find the running unit in it
        call = contextvars.copy_context().run
        return await asyncio.get_running_loop().run_in_executor(executor, call, handler, argument)

    return in_thread, True


class StreamConsumer:
    """Consumes one stream for one agent under one consumer name."""

    def __init__(
        self,
        client,
        spec: AgentSpec,
        consumer_name: str,
        stats: Optional[AgentStats] = None,
        executor: Optional[Executor] = None,
    ) -> None:
        self.client = client
        self.spec = spec
        self._handler, self._is_async = _bind_handler(spec, executor)
        self.name = consumer_name
        self.stats = stats or AgentStats()
        self.config = spec.config
        self._stopping = False
        self._drop_rest = False
        self._in_read = False
        self._task: Optional[asyncio.Task] = None
        self._to_ack: list = []
        self._deliveries: dict = {}  # id -> deliveries so far, for entries that failed
        self._retry_at: dict = {}  # id -> monotonic time the retry is due
        self._inflight: list = []
        self._inflight_since = 0.0
        self._next_claim = 0.0
        self._claim_cursor = "0-0"
        self._joined = False  # the group was made (or found) once: a later re-creation must not skip ahead
        self._last_read: Optional[str] = None  # the last id XREADGROUP ">" delivered

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> asyncio.Task:
        self._task = asyncio.get_running_loop().create_task(self.run(), name=f"streammachine:{self.name}")
        return self._task

    def stop(self, finish_read: bool = True) -> None:
        """Stop reading; a blocked read is interrupted at once.

        ``finish_read``: handle the rest of the entries already read (a
        shutdown: the runner cancels after its grace period) rather than stop
        after the entry in hand (a hot swap: the successor, under the same
        consumer name, takes the rest back from the pending list at once).
        """
        self._stopping = True
        self._drop_rest = self._drop_rest or not finish_read
        if self._in_read and self._task is not None and not self._task.done():
            self._task.cancel()

    @property
    def task(self) -> Optional[asyncio.Task]:
        return self._task

    async def run(self) -> None:
        backoff = Backoff()
        keepalive = asyncio.get_running_loop().create_task(self._keep_inflight_fresh())
        outage_logged = False
        try:
            while not self._stopping:
                try:
                    await self._ensure_group()
                    await self._flush_acks()
                    await self._adopt_dead_local_consumers()
                    await self._recover_own_pending()
                    if outage_logged:
                        log.warning("agent %s: reconnected to Redis", self.spec.name)
                        outage_logged = False
                    backoff.reset()
                    while not self._stopping:
                        await self._claim_and_retry()
                        entries = await self._read_new()
                        if entries:
                            await self._process(entries, None)
                        if self._periodic_due is not None and time.monotonic() >= self._periodic_due:
                            await self._run_periodic()
                except asyncio.CancelledError:
                    if not self._stopping:
                        raise
                except TRANSIENT as exc:
                    if self._stopping:
                        break
                    self.stats.reconnects += 1
                    if not outage_logged:
                        log.warning("agent %s: Redis unavailable (%s); retrying with backoff", self.spec.name, exc)
                        outage_logged = True
                    await asyncio.sleep(backoff.next_delay())
                except ResponseError as exc:
                    if self._stopping:
                        break
                    # NOGROUP: the server lost the group (restart without persistence): recreate and go on.
                    level = logging.INFO if "NOGROUP" in str(exc) else logging.ERROR
                    log.log(level, "agent %s: %s; retrying", self.spec.name, exc)
                    await asyncio.sleep(backoff.next_delay())
                except Exception as exc:  # e.g. cluster errors (slot moves, failover): never let the consumer die
                    if self._stopping:
                        break
                    self.stats.reconnects += 1
                    log.error("agent %s: unexpected %s: %s; retrying", self.spec.name, type(exc).__name__, exc)
                    await asyncio.sleep(backoff.next_delay())
        finally:
            keepalive.cancel()
            failures.flush(f"agent {self.spec.name}")  # the counts add up at the end too
            try:
                await asyncio.shield(self._flush_acks())
            except (asyncio.CancelledError, *TRANSIENT):
                pass
            except ResponseError as exc:  # nothing was written: the entries stay pending for the next run
                log.warning("agent %s: last acks/commit refused on the way out: %s", self.spec.name, exc)

    async def _ensure_group(self) -> None:
        """The group exists: created at ``start_id`` on the first start; if it vanished since (DEL of the
        stream, XGROUP DESTROY, FLUSHDB, a restart without persistence, a failover), re-created where this
        consumer stopped reading, so nothing written meanwhile is skipped (see ``_resume_at``)."""
        stream, group = self.spec.stream, self.spec.group
        start = self.config.start_id if not self._joined else await self._resume_at()
        created = await ensure_group(self.client, stream, group, start)
        if created and self._joined:
            replay = sorted(self._retry_at)
            self._retry_at.clear()
            self._deliveries.clear()
            log.warning(
                "agent %s: consumer group %r of stream %r had vanished; re-created at %s (what was read before it "
                "was handled; %d entries awaiting retry are delivered again, and what follows them)",
                self.spec.name, group, stream, start, len(replay),
            )  # fmt: skip
        self._joined = True

    async def _resume_at(self) -> str:
        """Where a re-created group starts: after the last id read, before any entry awaiting retry, at 0
        when the stream itself is newer than what was read (it was deleted and written again)."""
        if self._last_read is None:
            return "0"
        start = self._last_read
        if self._retry_at:
            oldest = min(self._retry_at, key=parse_stream_id)
            start = min(start, id_before(oldest), key=parse_stream_id)
        try:
            first = (await self.client.xinfo_stream(self.spec.stream)).get("first-entry")
        except ResponseError:  # no stream: MKSTREAM makes an empty one
            return "0"
        if first and parse_stream_id(first[0]) > parse_stream_id(start):
            return "0"
        return start

    # -- reading -------------------------------------------------------------

    async def _read_new(self) -> list:
        """XREADGROUP ``>``; the acks of the entries handled since the last read ride in the same round trip.

        The XACK goes first, so Redis applies it before the (possibly blocking)
        read: entries are still acknowledged only after their handler returned,
        in one round trip per read instead of two. If the round trip fails or
        is cancelled the ids stay queued and are acknowledged again (XACK is
        idempotent). A stage puts its commit there instead (``engine/stage.py``).
        """
        config, spec = self.config, self.spec
        block = config.block_ms
        due = self._next_due()
        if due is not None:
            block = max(1, min(block, int((due - time.monotonic()) * 1000) + 1))
        commands, token = self._take_pending()
        pool = direct_pool(self.client)
        self._in_read = True
        try:
            if pool is not None:
                encoder = pool.get_encoder()
                payload = encode_repeated(
                    ("XREADGROUP", "GROUP", spec.group, self.name, "COUNT", config.count, "BLOCK", block,
                     "STREAMS", spec.stream, ">"),
                    encoder,
                )  # fmt: skip
                if commands:
                    payload = b"".join([encode_command(c, encoder) for c in commands]) + payload
                replies = await round_trip(pool, payload, len(commands) + 1, raise_on_error=not self.errors_inline)
                entries = entries_with_fields(replies[-1])
            elif commands:
                pipe = self.client.pipeline(transaction=False)
                for command in commands:
                    pipe.execute_command(*command)
                pipe.xreadgroup(spec.group, self.name, {spec.stream: ">"}, count=config.count, block=block)
                replies = await pipe.execute(raise_on_error=not self.errors_inline)
                entries = cast(list, single_stream_entries(replies[-1]))  # redis-py replies are lists
            else:
                replies = [
                    await self.client.xreadgroup(
                        spec.group, self.name, {spec.stream: ">"}, count=config.count, block=block
                    )
                ]
                entries = cast(list, single_stream_entries(replies[-1]))  # redis-py replies are lists
        except BaseException:
            self._pending_failed(token)
            raise
        finally:
            self._in_read = False
        await self._pending_sent(token, replies[:-1])
        if entries:
            self._last_read = as_text(entries[-1][0])
        return entries

    def _next_due(self) -> Optional[float]:
        """When the next read must return at the latest (monotonic): a retry, or the periodic hook, is due."""
        due = min(self._retry_at.values()) if self._retry_at else None
        if self._periodic_due is not None and (due is None or self._periodic_due < due):
            due = self._periodic_due
        return due

    _periodic_due: Optional[float] = None  # a stage's periodic hook (engine/stage.py); plain consumers have none

    async def _run_periodic(self) -> None:
        pass

    # What rides in front of the next read. Here: the XACK of the entries handled since the last one.
    errors_inline = False  # True: an error reply of those commands is returned to _pending_sent, not raised

    def _take_pending(self) -> tuple:
        """(commands to send before the next read, a token for ``_pending_failed``/``_pending_sent``)."""
        ids, self._to_ack = self._to_ack, []
        return ([("XACK", self.spec.stream, self.spec.group, *ids)] if ids else []), ids

    def _pending_failed(self, ids: Any) -> None:
        self._to_ack = ids + self._to_ack

    async def _pending_sent(self, ids: Any, replies: list) -> None:
        if ids:
            self._forget_failures(ids)

    async def _recover_own_pending(self) -> None:
        """Take back what this consumer name left pending (a crash, a lost ack)."""
        start = "-"
        while not self._stopping:
            rows = await self.client.xpending_range(
                self.spec.stream, self.spec.group, min=start, max="+", count=self.config.count, consumername=self.name
            )
            if not rows:
                return
            await self._reclaim({row["message_id"]: row["times_delivered"] for row in rows})
            start = id_after(rows[-1]["message_id"])

    async def _adopt_dead_local_consumers(self) -> None:
        """Take over what a crashed predecessor on this host left pending, without waiting claim_idle_ms.

        A restarted process has a new pid, so a new consumer name: its old
        name's pending entries would otherwise wait for XAUTOCLAIM. The dead
        name is then removed from the group, once it holds nothing.
        """
        stream, group = self.spec.stream, self.spec.group
        for info in await self.client.xinfo_consumers(stream, group):
            name = cast(str, as_text(info["name"]))  # a consumer's name: never None
            if name == self.name or not dead_local_owner(name):
                continue
            while True:
                rows = await self.client.xpending_range(
                    stream, group, min="-", max="+", count=self.config.count, consumername=name
                )
                if not rows:
                    break
                log.info(
                    "agent %s: taking over %d entries left by %s (its process is gone)", self.spec.name, len(rows), name
                )
                await self._reclaim({row["message_id"]: row["times_delivered"] for row in rows})
                if self._stopping:
                    return
            if not (await self.client.xpending_range(stream, group, min="-", max="+", count=1, consumername=name)):
                await self.client.xgroup_delconsumer(stream, group, name)  # holds nothing: no entry is dropped

    async def _reclaim(self, deliveries: dict) -> None:
        """XCLAIM to self (Redis counts one more delivery), then handle or dead-letter."""
        claimed = await self.client.xclaim(
            self.spec.stream, self.spec.group, self.name, min_idle_time=0, message_ids=list(deliveries)
        )
        counts = {as_text(k): v + 1 for k, v in deliveries.items()}
        for entry_id in deliveries:
            self._retry_at.pop(entry_id, None)
        await self._process(claimed, counts)

    async def _claim_and_retry(self) -> None:
        now = time.monotonic()
        if self._retry_at and min(self._retry_at.values()) <= now:
            due = [i for i, at in self._retry_at.items() if at <= now][: self.config.count]
            self.stats.retried += len(due)
            await self._reclaim({i: self._deliveries.get(i, 1) for i in due})
        if now >= self._next_claim:
            self._next_claim = now + max(self.config.claim_idle_ms / 2000.0, 0.05)
            await self._claim_orphans()

    async def _claim_orphans(self) -> None:
        """XAUTOCLAIM entries other (dead) consumers left idle past claim_idle_ms."""
        reply = await self.client.xautoclaim(
            self.spec.stream,
            self.spec.group,
            self.name,
            min_idle_time=self.config.claim_idle_ms,
            start_id=self._claim_cursor,
            count=self.config.count,
        )
        self._claim_cursor = cast(str, as_text(reply[0])) if reply else "0-0"  # an entry id: never None
        claimed = [e for e in (reply[1] if reply else []) if e[1] is not None]
        if not claimed:
            return
        rows = await self.client.xpending_range(
            self.spec.stream,
            self.spec.group,
            min=claimed[0][0],
            max=claimed[-1][0],
            count=len(claimed) * 2 + 10,
            consumername=self.name,
        )
        counts = {as_text(r["message_id"]): r["times_delivered"] for r in rows}
        log.info("agent %s: reclaimed %d idle entries from other consumers", self.spec.name, len(claimed))
        await self._process(claimed, counts)

    async def _keep_inflight_fresh(self) -> None:
        """Reset the idle time of a long-running batch so no one reclaims live work."""
        period = max(self.config.claim_idle_ms / 3000.0, 0.02)
        while True:
            await asyncio.sleep(period)
            inflight = self._inflight
            if inflight and time.monotonic() - self._inflight_since >= period:
                try:
                    await self.client.xclaim(
                        self.spec.stream, self.spec.group, self.name, min_idle_time=0, message_ids=inflight, justid=True
                    )
                except TRANSIENT:
                    pass

    # -- handling ------------------------------------------------------------

    async def _process(self, entries: list, deliveries: Optional[dict]) -> None:
        """Handle entries in order; finished ones are queued for the ack.

        New entries (``deliveries`` is None) are acknowledged with the next read
        (see ``_read_new``); reclaimed ones at once. Either way only after their
        handler returned; a stop or cancel flushes the queue on the way out.
        """
        spec = self.spec
        if spec.batch:
            await self._process_batch(entries, deliveries)
            return
        handler, is_async = self._handler, self._is_async
        messages = received_messages(spec.stream, self.name, time.time(), entries)
        done: List[Any] = []
        done_append = done.append
        self._inflight = [entry[0] for entry in entries]
        self._inflight_since = time.monotonic()
        started = time.perf_counter()
        try:
            for (entry_id, fields), message in zip(entries, messages):
                if self._drop_rest:
                    break
                if message is None:  # deleted/trimmed while pending: nothing left to handle
                    done_append(entry_id)
                    continue
                try:
                    if is_async:
                        await handler(message)
                    else:
                        handler(message)
                except Exception as exc:
                    await self._failed(entry_id, fields, exc, deliveries)
                    continue
                except asyncio.CancelledError as exc:
                    if own_cancellation(self._stopping):
                        raise
                    await self._failed(entry_id, fields, exc, deliveries)
                    continue
                done_append(entry_id)
        finally:
            self._inflight = []
            stats = self.stats
            stats.handler_seconds += time.perf_counter() - started
            stats.processed += len(done)
            self._to_ack += done
            if deliveries is not None and self._to_ack:  # reclaimed entries (and any skipped by policy): ack now
                await asyncio.shield(self._flush_acks())

    async def _process_batch(self, entries: list, deliveries: Optional[dict]) -> None:
        """One handler call for the whole read; acks as in ``_process``."""
        if not self._drop_rest:
            spec = self.spec
            messages = [m for m in received_messages(spec.stream, self.name, time.time(), entries) if m is not None]
            if len(messages) < len(entries):  # some were deleted while pending: ack those whatever the handler does
                self._to_ack += [i for i, f in entries if f is None]
                ids = [i for i, f in entries if f is not None]
            else:
                ids = [entry[0] for entry in entries]
            if messages:
                self._inflight = ids
                self._inflight_since = time.monotonic()
                started = time.perf_counter()
                try:
                    result = self._handler(messages)
                    if self._is_async:
                        await result
                except (Exception, asyncio.CancelledError) as exc:
                    if isinstance(exc, asyncio.CancelledError) and own_cancellation(self._stopping):
                        raise
                    await self._isolate(entries, messages, deliveries)
                else:
                    self.stats.processed += len(ids)
                    self._to_ack += ids
                finally:
                    self._inflight = []
                    self.stats.handler_seconds += time.perf_counter() - started
        else:
            self._to_ack += [i for i, f in entries if f is None]
        if deliveries is not None and self._to_ack:
            await asyncio.shield(self._flush_acks())

    async def _isolate(self, entries: list, messages: list, deliveries: Optional[dict]) -> None:
        """A batch failed: hand each entry over alone, so one poison entry does not take the others with it.

        The failed call may have done part of its work, so the entries it
        covered can be seen twice: at-least-once, as everywhere.
        """
        live = [entry for entry in entries if entry[1] is not None]
        handler, is_async = self._handler, self._is_async
        for (entry_id, fields), message in zip(live, messages):
            try:
                result = handler([message])
                if is_async:
                    await result
            except (Exception, asyncio.CancelledError) as exc:
                if isinstance(exc, asyncio.CancelledError) and own_cancellation(self._stopping):
                    raise
                await self._failed(entry_id, fields, exc, deliveries)
            else:
                self.stats.processed += 1
                self._to_ack.append(entry_id)

    async def _failed(self, entry_id, fields: dict, exc: BaseException, deliveries: Optional[dict]) -> None:
        if isinstance(exc, asyncio.CancelledError):
            exc = HandlerCancelled()
        key = as_text(entry_id)
        delivered = (deliveries or {}).get(key, 1)
        self.stats.record_error(exc)
        policy = self.config.on_error
        if policy == "skip":
            failures.record(
                f"agent {self.spec.name}",
                logging.WARNING,
                "skipped",
                "entry %s failed (%s: %s); skipped as configured",
                key,
                type(exc).__name__,
                exc,
            )
            self.stats.skipped += 1
            self._to_ack.append(entry_id)
            return
        # typed messages (#15): an entry that does not fit the handler's model cannot succeed on a retry
        if (
            policy == "dead_letter"
            or delivered >= self.config.max_deliveries
            or not self.config.retries(exc)
            or isinstance(exc, InvalidMessage)
        ):
            await self._dead_letter(entry_id, fields, exc, delivered)
            return
        failures.record(
            f"agent {self.spec.name}",
            logging.WARNING,
            "retried",
            "entry %s failed on delivery %d/%d: %s: %s",
            key,
            delivered,
            self.config.max_deliveries,
            type(exc).__name__,
            exc,
        )
        self._deliveries[key] = delivered
        self._retry_at[key] = time.monotonic() + self.config.retry_delay(delivered)

    async def _dead_letter(self, entry_id, fields: dict, exc: BaseException, delivered: int) -> None:
        key = as_text(entry_id)
        target = self.config.dead_letter_for(self.spec.stream)
        # a record's own _dlq_* fields (a dead letter replayed and failing again) are kept, renamed _orig_dlq_*
        record = {(b"_orig" + k if k.startswith(DLQ_PREFIX) else k): v for k, v in _bytes_keys(fields).items()}
        record.update(
            {
                DLQ_PREFIX + b"stream": self.spec.stream,
                DLQ_PREFIX + b"group": self.spec.group,
                DLQ_PREFIX + b"id": key,
                DLQ_PREFIX + b"agent": self.spec.name,
                DLQ_PREFIX + b"error": f"{type(exc).__name__}: {exc}"[:4000],
                DLQ_PREFIX + b"deliveries": delivered,
                DLQ_PREFIX + b"at": time.time(),
            }
        )
        if same_slot(self.client, target, self.spec.stream):
            pipe = self.client.pipeline(transaction=True)
            pipe.xadd(target, record)
            pipe.xack(self.spec.stream, self.spec.group, entry_id)
            await asyncio.shield(pipe.execute())
        else:
            # Cluster, different slots: no MULTI possible. XADD first, then XACK: a crash in between leaves the
            # entry pending, so it is dead-lettered again later (a duplicate in the dead-letter stream, no loss).
            await asyncio.shield(self._move_to_dead_letter(target, record, entry_id))
        self._deliveries.pop(key, None)
        self._retry_at.pop(key, None)
        self.stats.dead_lettered += 1
        failures.record(
            f"agent {self.spec.name}",
            logging.ERROR,
            "dead-lettered",
            "entry %s dead-lettered to %r after %d deliveries: %s: %s",
            key,
            target,
            delivered,
            type(exc).__name__,
            exc,
        )

    async def _move_to_dead_letter(self, target: str, record: dict, entry_id) -> None:
        await self.client.xadd(target, record)
        await self.client.xack(self.spec.stream, self.spec.group, entry_id)

    async def _flush_acks(self) -> None:
        if not self._to_ack:
            return
        ids, self._to_ack = self._to_ack, []
        try:
            await self.client.xack(self.spec.stream, self.spec.group, *ids)
        except BaseException:
            self._to_ack = ids + self._to_ack  # try again after reconnecting
            raise
        self._forget_failures(ids)

    def _forget_failures(self, acked: list) -> None:
        """Drop the retry bookkeeping of entries that are now acknowledged."""
        if self._deliveries or self._retry_at:
            for entry_id in acked:
                key = as_text(entry_id)
                self._deliveries.pop(key, None)
                self._retry_at.pop(key, None)
