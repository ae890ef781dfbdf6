"""How a consumer takes back work: its group, its own pending entries, a dead predecessor's, idle orphans.

On start the consumer makes (or finds) its group and takes back its own
pending entries and those a crashed process on this host left under its old
name; while running it retries failed entries when due, reclaims entries
that dead consumers left idle (XAUTOCLAIM), and keeps its own slow in-flight
entries fresh so live work is not stolen. ``Recovery`` is a part of
``StreamConsumer`` (``engine/consumer.py``): what it takes back goes
through the consumer's ``_process``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Optional, cast

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from streammachine.engine.identity import dead_local_owner
from streammachine.engine.specs import AgentSpec, AgentStats
from streammachine.redis.connection import ensure_group
from streammachine.redis.entries import as_text, id_after, id_before, parse_stream_id

# the consumer's own logger: these lines are the consumer's, wherever the code sits
log = logging.getLogger("streammachine.engine.consumer")

TRANSIENT = (RedisConnectionError, RedisTimeoutError, ConnectionError, TimeoutError, OSError)


class Recovery:
    """Group, pending-list and claim work, for ``StreamConsumer``."""

    client: Any
    spec: AgentSpec
    config: Any
    stats: AgentStats
    name: str
    _stopping: bool
    _joined: bool
    _last_read: Optional[str]
    _deliveries: dict
    _retry_at: dict
    _inflight: list
    _inflight_since: float
    _next_claim: float
    _claim_cursor: str

    async def _process(self, entries: list, deliveries: Optional[dict]) -> None:
        raise NotImplementedError  # the consumer's: handle, then ack

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
