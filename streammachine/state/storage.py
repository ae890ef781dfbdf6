"""Storage: shared state for agents, timers and worker processes.

Two backends behind one async API:

- ``"manager"`` (default, as in the reference): a ``multiprocessing.Manager``
  dict (state/manager.py), shared by the App and its forked worker processes
  on one host, and by the workers of ``streammachine run --workers N``.
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

from streammachine.state.manager import STRIPES, connect_manager, start_manager


class ManagerBackend:
    """A Manager dict with striped per-key locks: a Manager of its own (started on first use), or the one
    ``locator`` names (``streammachine run --workers N`` shares the supervisor's)."""

    def __init__(self, locator: Optional[str] = None) -> None:
        self.locator = locator
        self._manager: Any = None
        self._data: Any = None  # a DictProxy once started
        self._locks: list = []
        self._start_lock = threading.Lock()

    def _dict(self) -> Any:
        if self._data is None:
            with self._start_lock:
                if self._data is None:
                    manager = connect_manager(self.locator) if self.locator else start_manager()
                    self._locks = [manager.stripe(i) for i in range(STRIPES)]  # type: ignore[attr-defined]
                    self._manager, self._data = manager, manager.store()  # type: ignore[attr-defined]
        return self._data

    def start(self) -> None:
        """Start the manager now: must happen before worker processes fork."""
        self._dict()

    def _lock(self, key: str):
        return self._locks[zlib.crc32(key.encode()) % STRIPES]

    def write(self, key: str, value: Any) -> None:
        data = self._dict()
        with self._lock(key):
            data[key] = value

    def read(self, key: str, default: Any) -> Any:
        return self._dict().get(key, default)

    def delete(self, key: str) -> bool:
        data = self._dict()
        with self._lock(key):
            if key not in data:  # (a sentinel default would come back as a copy through the proxy)
                return False
            del data[key]
            return True

    def exists(self, key: str) -> bool:
        return key in self._dict()

    def keys(self) -> list:
        return list(self._dict().keys())

    def clear(self) -> None:
        self._dict().clear()

    def update(self, key: str, fn: Callable[[Any], Any], default: Any) -> Any:
        data = self._dict()
        with self._lock(key):
            value = fn(data.get(key, default))
            data[key] = value
            return value

    def close(self) -> None:
        if self._manager is not None and self.locator is None:  # a shared Manager is its starter's to stop
            self._manager.shutdown()
        self._manager = self._data = None


def _make_backend(backend: Optional[str], connection: Any, manager: Optional[str] = None) -> Any:
    if backend == "redis":
        if connection is None:
            from streammachine.redis.connection import RedisConnection

            connection = RedisConnection()
        return RedisBackend(connection)
    if backend in (None, "manager"):
        return ManagerBackend(manager)
    raise ValueError(f"Storage backend={backend!r}: expected 'manager' or 'redis'")


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
    """Async key-value store shared across processes.

    ``app.storage`` is the App's own store (its backend, its connection).
    ``Storage()`` is the process-wide store of the reference API: created by
    the first call, the same object afterwards; asking it for another
    backend than it has is an error, ``Storage.reset_instance()`` forgets it.
    """

    _instance: ClassVar[Optional[Storage]] = None
    _backend: Optional[Any] = None

    def __new__(cls, backend: Optional[str] = None, connection: Any = None) -> Storage:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __init__(self, backend: Optional[str] = None, connection: Any = None) -> None:
        if self._backend is None:
            self._backend = _make_backend(backend, connection)
        elif backend is not None and backend != self.backend_name:
            raise ValueError(
                f"Storage(backend={backend!r}): the process-wide Storage() is already a {self.backend_name!r} store; "
                "use an App's own (app.storage, App(storage_backend=...)) or Storage.reset_instance() first"
            )

    @classmethod
    def create(cls, backend: Optional[str] = None, connection: Any = None, manager: Optional[str] = None) -> Storage:
        """A store of its own (what ``app.storage`` is), not the process-wide ``Storage()``.

        ``manager``: the locator of a running Manager to share (state/manager.py) instead of starting one.
        """
        store = object.__new__(cls)
        store._backend = _make_backend(backend, connection, manager)
        return store

    @property
    def backend_name(self) -> str:
        return "redis" if isinstance(self._backend, RedisBackend) else "manager"

    @classmethod
    def reset_instance(cls) -> None:
        """Forget the process-wide store (and stop its Manager): for tests."""
        instance, cls._instance = cls._instance, None
        if instance is not None:
            instance.close()

    def close(self) -> None:
        """Stop the Manager process of a ``manager`` store (its data goes with it)."""
        if isinstance(self._backend, ManagerBackend):
            self._backend.close()

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
