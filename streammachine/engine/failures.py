"""What a consumer does with an entry whose handler failed: retry later, skip, or dead-letter.

A failed entry stays pending and is retried (XCLAIM to itself, so Redis
counts the delivery) until ``max_deliveries``; then it is written to the
dead-letter stream and acknowledged in one MULTI (on a cluster with the two
streams in different slots: XADD, then XACK). ``FailureHandling`` is a part
of ``StreamConsumer`` (``engine/consumer.py``): it works on the consumer's
retry bookkeeping (``_deliveries``, ``_retry_at``) and its ack queue.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Optional

from streammachine.engine.lograte import FailureLog
from streammachine.engine.specs import AgentSpec, AgentStats
from streammachine.redis.deadletters import dead_letter_record
from streammachine.redis.entries import as_text
from streammachine.redis.transport import same_slot
from streammachine.typed import InvalidMessage

# the consumer's own logger: these lines are the consumer's, wherever the code sits
log = logging.getLogger("streammachine.engine.consumer")
# one line per agent per interval, however fast its handler fails (per process: the agents' shared budget)
failure_log = FailureLog(log)


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


class FailureHandling:
    """Retry bookkeeping and dead-lettering, for ``StreamConsumer``."""

    client: Any
    spec: AgentSpec
    config: Any
    stats: AgentStats
    _to_ack: list
    _deliveries: dict  # id -> deliveries so far, for entries that failed
    _retry_at: dict  # id -> monotonic time the retry is due

    async def _failed(self, entry_id, fields: dict, exc: BaseException, deliveries: Optional[dict]) -> None:
        if isinstance(exc, asyncio.CancelledError):
            exc = HandlerCancelled()
        key = as_text(entry_id)
        delivered = (deliveries or {}).get(key, 1)
        self.stats.record_error(exc)
        policy = self.config.on_error
        if policy == "skip":
            failure_log.record(
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
        failure_log.record(
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
        record = dead_letter_record(
            fields,
            stream=self.spec.stream,
            group=self.spec.group,
            entry_id=key or "",
            agent=self.spec.name,
            error=f"{type(exc).__name__}: {exc}",
            deliveries=delivered,
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
        failure_log.record(
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

    def _forget_failures(self, acked: list) -> None:
        """Drop the retry bookkeeping of entries that are now acknowledged."""
        if self._deliveries or self._retry_at:
            for entry_id in acked:
                key = as_text(entry_id)
                self._deliveries.pop(key, None)
                self._retry_at.pop(key, None)
