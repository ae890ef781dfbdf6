"""The instances registry: every running App announces itself in Redis, with a heartbeat.

Each App (a notebook's, a ``streammachine run``, every worker process of
``--workers N``) keeps one key, ``{streammachine}:instance:<id>``, holding
its status as JSON (name, host, pid, start time, version, agents with their
counters and rate, timers) with a TTL of ``STREAMMACHINE_INSTANCE_TTL``
seconds, and rewrites it every ``STREAMMACHINE_HEARTBEAT_SECONDS``. A
sorted set, ``{streammachine}:instances``, indexes the ids by expiry time so
a reader needs no SCAN. Both keys share a hash slot (``{streammachine}``),
so one heartbeat is one MULTI/EXEC round trip on a cluster too; it also
drops the index entries of instances that expired (killed processes).

A stopping App deletes its entry. A killed one disappears when its TTL runs
out: its key expires, and readers skip index entries past their expiry.

The status comes from ``App.status_now()`` (engine/status.py, no I/O): the
counters are in hand; pending and lag are for readers to fetch from Redis.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
from typing import Any, Callable, Dict, List, Optional

from streammachine.engine.status import AppStatus
from streammachine.redis.entries import as_text
from streammachine.redis.transport import Transport

log = logging.getLogger("streammachine.engine.instances")

NAMESPACE = "{streammachine}"
INDEX = f"{NAMESPACE}:instances"
KEY_PREFIX = f"{NAMESPACE}:instance:"


def instance_key(instance_id: str) -> str:
    return KEY_PREFIX + instance_id


def new_instance_id(app_name: str, host: Optional[str] = None, pid: Optional[int] = None) -> str:
    """``name@host:pid``: unique among live processes, readable in a list."""
    return f"{app_name}@{host or socket.gethostname()}:{pid or os.getpid()}"


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("streammachine")
    except metadata.PackageNotFoundError:
        return "unknown"


def instance_record(status: AppStatus, identity: Dict[str, Any], now: float, ttl: float) -> Dict[str, Any]:
    """What one heartbeat writes: ``identity`` (id, name, host, pid, started, version, worker) and the status."""
    agents = []
    for agent in status.agents:
        calls = agent.processed + agent.failed
        agents.append(
            {
                "name": agent.name,
                "stream": agent.stream,
                "group": agent.group,
                "concurrency": agent.concurrency,
                "processes": agent.processes,
                "running": agent.running,
                "processed": agent.processed,
                "failed": agent.failed,
                "retried": agent.retried,
                "dead_lettered": agent.dead_lettered,
                "skipped": agent.skipped,
                "rate": agent.rate,
                "handler_seconds": agent.handler_seconds,
                "handler_ms": round(1000 * agent.handler_seconds / calls, 3) if calls else None,
                "last_error": agent.last_error,
            }
        )
    timers = [
        {
            "name": timer.name,
            "interval": timer.interval,
            "running": timer.running,
            "runs": timer.runs,
            "failures": timer.failures,
            "last_error": timer.last_error,
        }
        for timer in status.timers
    ]
    return {
        **identity,
        "state": status.state,
        "server": status.server,
        "heartbeat": now,
        "expires": now + ttl,
        "agents": agents,
        "timers": timers,
    }


class InstanceHeartbeat:
    """Keeps one App's entry in the registry while it runs: ``start()``, then ``stop()`` deletes it.

    ``status``: the App's ``status_now`` (no I/O). ``transport``: how to reach Redis (awaited each
    beat, so a reconnected client is picked up). A failed beat is logged at DEBUG and retried at
    the next interval: the registry is an observer, it never stops the App.
    """

    def __init__(
        self,
        app_name: str,
        status: Callable[[], AppStatus],
        transport: Callable[[], Any],
        *,
        interval: float,
        ttl: float,
        worker: Optional[int] = None,
    ) -> None:
        self.status, self.transport = status, transport
        self.interval, self.ttl = interval, max(ttl, interval * 1.5)  # a beat late by half an interval survives
        self.id = new_instance_id(app_name)
        self.identity = {
            "id": self.id,
            "name": app_name,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started": time.time(),
            "version": _version(),
            "worker": worker,
        }
        self._task: Optional[asyncio.Task] = None
        self._stopping = asyncio.Event()
        self.beats = 0

    @classmethod
    def for_app(cls, app: Any) -> Optional[InstanceHeartbeat]:
        """The heartbeat of an App (its settings, status and connection); None when the registry is off."""
        settings = app.settings
        if settings.heartbeat_seconds <= 0:
            return None
        return cls(
            app.name,
            app.status_now,
            app.redis.transport,
            interval=settings.heartbeat_seconds,
            ttl=settings.instance_ttl,
            worker=app.worker_index,
        )

    async def start(self) -> None:
        self._stopping = asyncio.Event()
        await self.beat()
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"streammachine:heartbeat:{self.id}")

    async def _run(self) -> None:
        stopping = self._stopping
        while True:
            try:
                await asyncio.wait_for(stopping.wait(), self.interval)
                return
            except asyncio.TimeoutError:
                pass
            try:
                await self.beat()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis away: the next beat retries, the entry may expire meanwhile
                log.debug("instance %s: heartbeat not written: %s", self.id, exc)

    async def beat(self) -> None:
        """One pipelined write: the entry with its TTL, its index score, and the expired index entries dropped."""
        now = time.time()
        record = instance_record(self.status(), self.identity, now, self.ttl)
        transport: Transport = await self.transport()
        await transport.send(
            [
                ("SET", instance_key(self.id), json.dumps(record), "PX", int(self.ttl * 1000)),
                ("ZADD", INDEX, now + self.ttl, self.id),
                ("ZREMRANGEBYSCORE", INDEX, "-inf", f"({now}"),
            ],
            atomic=True,
        )
        self.beats += 1

    async def stop(self) -> None:
        """Stop beating and delete the entry (a Redis that does not answer: it expires on its own)."""
        task, self._task = self._task, None
        if task is not None:
            # the event ends the loop even when a cancellation is swallowed inside a Redis call
            self._stopping.set()
            task.cancel()
            await asyncio.wait([task], timeout=5)
        try:
            transport: Transport = await self.transport()
            await asyncio.wait_for(
                transport.send([("DEL", instance_key(self.id)), ("ZREM", INDEX, self.id)], atomic=True), timeout=2
            )
        except Exception as exc:
            log.debug("instance %s: entry not deleted (it expires within %.0f s): %s", self.id, self.ttl, exc)


async def list_instances(client: Any) -> List[Dict[str, Any]]:
    """Every live instance's last heartbeat, sorted by name then id (two reads; no SCAN)."""
    ids = [str(as_text(i)) for i in await client.zrangebyscore(INDEX, time.time(), "+inf")]
    if not ids:
        return []
    raw = await client.mget([instance_key(i) for i in ids])
    found = []
    for value in raw:
        if value is None:  # expired or deleted between the two reads
            continue
        try:
            found.append(json.loads(value))
        except ValueError:
            continue
    return sorted(found, key=lambda record: (record.get("name", ""), record.get("id", "")))


async def get_instance(client: Any, instance_id: str) -> Optional[Dict[str, Any]]:
    value = await client.get(instance_key(instance_id))
    return None if value is None else json.loads(value)
