"""One agent consumer: the read loop, handling, acks.

Delivery is at-least-once. An entry is acknowledged only after its handler
returned, with the next read (the XACK rides in front of the XREADGROUP);
reclaimed entries at once. Connection loss means capped, jittered backoff
and a retry with the same consumer name. The consumer's other concerns are
parts of it, each in its module: taking work back (its own pending entries,
a dead predecessor's, idle orphans, due retries: ``engine/recovery.py``)
and failed entries (retry, skip, dead-letter: ``engine/failures.py``).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import random
import time
from concurrent.futures import Executor
from typing import Any, List, Optional, cast

from redis.exceptions import ResponseError

from streammachine.engine.failures import FailureHandling, HandlerCancelled, failure_log, own_cancellation
from streammachine.engine.recovery import TRANSIENT, Recovery
from streammachine.engine.specs import AgentSpec, AgentStats
from streammachine.message import received_messages
from streammachine.redis.entries import as_text, single_stream_entries
from streammachine.redis.resp import direct_pool, encode_command, encode_repeated, entries_with_fields, round_trip
from streammachine.typed import typed_handler

__all__ = ["TRANSIENT", "Backoff", "HandlerCancelled", "StreamConsumer", "own_cancellation"]

log = logging.getLogger("streammachine.engine.consumer")


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


class StreamConsumer(Recovery, FailureHandling):
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
            failure_log.flush(f"agent {self.spec.name}")  # the counts add up at the end too
            try:
                await asyncio.shield(self._flush_acks())
            except (asyncio.CancelledError, *TRANSIENT):
                pass
            except ResponseError as exc:  # nothing was written: the entries stay pending for the next run
                log.warning("agent %s: last acks/commit refused on the way out: %s", self.spec.name, exc)

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
