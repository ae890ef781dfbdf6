"""Exactly one dashboard per Redis: a lock with an owner token, renewed while its holder serves.

redis-py's ``redis.asyncio.lock.Lock`` does the ownership-safe parts in Lua:
acquiring is ``SET NX PX`` with a random token, renewing (``reacquire``) and
releasing compare the token first, so a holder whose lock expired (and was
taken by another candidate) can neither extend nor delete the new holder's.

The holder renews every third of the TTL and stops serving as soon as a
renewal fails or has not succeeded for 80% of the TTL (a Redis that does not
answer), so its lease ends before another candidate can acquire the lock:
never two dashboards at once. Other candidates try to acquire it every
second (or fifth of the TTL), so one takes over within the TTL after the
holder dies.

``{streammachine}:dashboard`` names the holder (instance, host, pid, URL) for
whoever wants to know where the dashboard is; it lives as long as the lock.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any, Dict, Optional

from redis.asyncio.lock import Lock
from redis.exceptions import LockError

from streammachine.engine.instances import NAMESPACE

log = logging.getLogger("streammachine.dashboard")

LOCK_KEY = f"{NAMESPACE}:dashboard:lock"
OWNER_KEY = f"{NAMESPACE}:dashboard"
RENEW_SAFETY = 0.8  # a holder whose last renewal is older than this share of the TTL stops serving


class Election:
    """One candidate's side of the lock (``client``: an async redis-py client or cluster client)."""

    def __init__(self, client: Any, ttl: float, owner: Dict[str, Any]) -> None:
        self.ttl, self.owner = ttl, owner
        self.renewed_at: Optional[float] = None  # monotonic time the last acquire/renew was *sent*
        self._lock = self._make_lock(client)

    def _make_lock(self, client: Any) -> Lock:
        return Lock(client, LOCK_KEY, timeout=self.ttl, blocking=False, thread_local=False)

    def follow(self, client: Any) -> None:
        """The connection made a new client (a moved embedded server): keep the token, use the new client."""
        if self._lock.redis is not client:
            token = self._lock.local.token
            self._lock = self._make_lock(client)
            self._lock.local.token = token

    @property
    def holds(self) -> bool:
        return self.renewed_at is not None

    def lease_valid(self) -> bool:
        """Whether the lock is surely still ours (last renewal well within the TTL)."""
        return self.renewed_at is not None and time.monotonic() - self.renewed_at < self.ttl * RENEW_SAFETY

    async def try_acquire(self) -> bool:
        sent = time.monotonic()
        if not await self._lock.acquire(blocking=False):
            return False
        self.renewed_at = sent
        await self._publish_owner()
        return True

    async def renew(self) -> bool:
        """Extend the lease to a full TTL; False when the lock is no longer ours (it expired, another holds it)."""
        sent = time.monotonic()
        try:
            await self._lock.reacquire()
        except LockError:
            self.renewed_at = None
            return False
        self.renewed_at = sent
        await self._publish_owner()
        return True

    async def release(self) -> None:
        """Give the lock up (only if still ours: the token is compared in Redis)."""
        if self.renewed_at is None:
            return
        surely_ours = self.lease_valid()
        self.renewed_at = None
        try:
            if surely_ours:  # while the lock is ours, nobody else wrote the owner key
                await self._lock.redis.delete(OWNER_KEY)
            await self._lock.release()
        except LockError:
            pass

    async def _publish_owner(self) -> None:
        await self._lock.redis.set(OWNER_KEY, json.dumps(self.owner), px=int(self.ttl * 1000))


async def current_owner(client: Any) -> Optional[Dict[str, Any]]:
    """Who serves the dashboard of this Redis now (None: nobody)."""
    raw = await client.get(OWNER_KEY)
    return None if raw is None else json.loads(raw)
