"""Storage: shared state for agents, timers and worker processes.

Two backends behind one async API:

- ``"manager"`` (default, as in the reference): a ``multiprocessing.Manager``
  dict, shared by the App and its forked worker processes on one host.
- ``"redis"``: a Redis hash (values as JSON), shared by every process on
  every host and by the MCP server; choose it with ``STREAMMACHINE_STORAGE=redis``.

``read`` then ``write`` is not atomic across processes; ``update(key, fn)``
and ``incr(key)`` are.
"""

from __future__ import annotations

import asyncio
import threading
import zlib
from typing import Any, Callable, ClassVar, Optional

import orjson

_STRIPES = 64


class ManagerBackend:
    """A Manager dict with striped per-key locks (started on first use)."""

    def __init__(self) -> None:
        self._manager = None
        self._data = None
        self._locks: list = []
        self._start_lock = threading.Lock()

    def _ensure(self) -> None:
        if self._data is None:
            with self._start_lock:
                if self._data is None:
                    import multiprocessing

                    manager = multiprocessing.Manager()
                    self._locks = [manager.Lock() for _ in range(_STRIPES)]
                    self._manager, self._data = manager, manager.dict()

    def start(self) -> None:
        """Start the manager now: must happen before worker processes fork."""
        self._ensure()

    def _lock(self, key: str):
        return self._locks[zlib.crc32(key.encode()) % _STRIPES]

    def write(self, key: str, value: Any) -> None:
        self._ensure()
        with self._lock(key):
            self._data[key] = value

    def read(self, key: str, default: Any) -> Any:
        self._ensure()
        return self._data.get(key, default)

    def delete(self, key: str) -> bool:
        self._ensure()
        with self._lock(key):
            if key not in self._data:  # (a sentinel default would come back as a copy through the proxy)
                return False
            del self._data[key]
            return True

    def exists(self, key: str) -> bool:
        self._ensure()
        return key in self._data

    def keys(self) -> list:
        self._ensure()
        return list(self._data.keys())

    def clear(self) -> None:
        self._ensure()
        self._data.clear()

    def update(self, key: str, fn: Callable[[Any], Any], default: Any) -> Any:
        self._ensure()
        with self._lock(key):
            value = fn(self._data.get(key, default))
            self._data[key] = value
            return value

    def close(self) -> None:
        if self._manager is not None:
            self._manager.shutdown()
            self._manager = self._data = None


class RedisBackend:
    """A Redis hash; values are JSON so any language (and the MCP server) can read them."""

    def __init__(self, connection, key: str = "streammachine:storage") -> None:
        self.connection = connection
        self.key = key

    @staticmethod
    def _dump(key: str, value: Any) -> bytes:
        try:
            return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY)
        except TypeError as exc:
            raise TypeError(f"storage key {key!r}: the redis backend stores JSON values ({exc})") from None

    async def write(self, key: str, value: Any) -> None:
        client = await self.connection.get_client()
        await client.hset(self.key, key, self._dump(key, value))

    async def read(self, key: str, default: Any) -> Any:
        client = await self.connection.get_client()
        raw = await client.hget(self.key, key)
        return default if raw is None else orjson.loads(raw)

    async def delete(self, key: str) -> bool:
        client = await self.connection.get_client()
        return bool(await client.hdel(self.key, key))

    async def exists(self, key: str) -> bool:
        client = await self.connection.get_client()
        return bool(await client.hexists(self.key, key))

    async def keys(self) -> list:
        client = await self.connection.get_client()
        return sorted(k.decode() if isinstance(k, bytes) else k for k in await client.hkeys(self.key))

    async def clear(self) -> None:
        client = await self.connection.get_client()
        await client.delete(self.key)

    async def update(self, key: str, fn: Callable[[Any], Any], default: Any) -> Any:
        """Optimistic read-modify-write (WATCH/MULTI), retried on conflict."""
        from redis.exceptions import WatchError

        client = await self.connection.get_client()
        async with client.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(self.key)
                    raw = await pipe.hget(self.key, key)
                    value = fn(default if raw is None else orjson.loads(raw))
                    pipe.multi()
                    pipe.hset(self.key, key, self._dump(key, value))
                    await pipe.execute()
                    return value
                except WatchError:
                    continue


class Storage:
    """Singleton async key-value store shared across processes."""

    _instance: ClassVar[Optional[Storage]] = None

    def __new__(cls, *args: Any, **kwargs: Any) -> Storage:
        if cls._instance is None:
            instance = super().__new__(cls)
            instance._backend = None
            cls._instance = instance
        return cls._instance

    def __init__(self, backend: Optional[str] = None, connection=None) -> None:
        if self._backend is not None:
            return
        if backend == "redis":
            if connection is None:
                from streammachine.redis.connection import RedisConnection

                connection = RedisConnection()
            self._backend = RedisBackend(connection)
        elif backend in (None, "manager"):
            self._backend = ManagerBackend()
        else:
            raise ValueError(f"Storage backend={backend!r}: expected 'manager' or 'redis'")

    @property
    def backend_name(self) -> str:
        return "redis" if isinstance(self._backend, RedisBackend) else "manager"

    @classmethod
    def reset_instance(cls) -> None:
        """Forget the singleton (and stop its Manager): for tests."""
        instance, cls._instance = cls._instance, None
        if instance is not None and isinstance(instance._backend, ManagerBackend):
            instance._backend.close()

    def prepare_for_fork(self) -> None:
        if isinstance(self._backend, ManagerBackend):
            self._backend.start()

    async def _call(self, name: str, *args: Any) -> Any:
        method = getattr(self._backend, name)
        if isinstance(self._backend, RedisBackend):
            return await method(*args)
        return await asyncio.to_thread(method, *args)

    async def write(self, key: str, value: Any) -> None:
        await self._call("write", key, value)

    async def read(self, key: str, default: Any = None) -> Any:
        return await self._call("read", key, default)

    async def delete(self, key: str) -> bool:
        return await self._call("delete", key)

    async def exists(self, key: str) -> bool:
        return await self._call("exists", key)

    async def keys(self) -> list:
        return await self._call("keys")

    async def clear(self) -> None:
        await self._call("clear")

    async def update(self, key: str, fn: Callable[[Any], Any], default: Any = None) -> Any:
        """Atomically replace ``key``'s value with ``fn(value)``; returns the new value."""
        return await self._call("update", key, fn, default)

    async def incr(self, key: str, amount: float = 1) -> Any:
        """Atomically add ``amount`` (missing counts as 0); returns the new value."""
        return await self.update(key, lambda value: (value or 0) + amount, 0)
