"""Running the async Redis cores (producer, inspect) on a synchronous redis-py client.

The CLI and the notebook magics talk to Redis through a plain synchronous
client: a line magic runs inside the kernel's already running event loop, so
it can neither ``asyncio.run`` a coroutine nor wait on that loop without
freezing the kernel. Rather than a sync twin of every producing and
inspecting function (which would drift, as ``%streammachine send`` did when
it forgot ``STREAMMACHINE_STREAM_MAXLEN``), the cores are written once, as
coroutines, and a synchronous caller runs them here:

- ``awaitable(client)`` wraps a sync client so that each command method
  returns an already-finished awaitable (the command ran when it was called);
- ``Transport`` (``transport.py``) accepts a sync client as it is;
- ``run_sync(coro)`` steps the coroutine once. It never suspends (every
  ``await`` is on a finished value), so it completes in that one step, on any
  thread, with or without a running event loop, and never touches the loop.
"""

from __future__ import annotations

from typing import Any, Callable, Coroutine, Generator, TypeVar

T = TypeVar("T")


class _Done:
    """An awaitable whose result is already there."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __await__(self) -> Generator[Any, None, Any]:
        return self.value
        yield  # a generator that finishes at once: awaiting it never suspends


class _AwaitableClient:
    """A sync client's command methods, each returning a finished awaitable."""

    __slots__ = ("client",)

    def __init__(self, client: Any) -> None:
        self.client = client

    def __getattr__(self, name: str) -> Callable[..., _Done]:
        method = getattr(self.client, name)

        def call(*args: Any, **kwargs: Any) -> _Done:
            return _Done(method(*args, **kwargs))

        return call


def is_async_client(client: Any) -> bool:
    """True for redis.asyncio clients (and ``awaitable(...)`` wrappers): their commands are awaited."""
    import redis.asyncio
    from redis.asyncio.cluster import RedisCluster

    return isinstance(client, (redis.asyncio.Redis, RedisCluster, _AwaitableClient))


def awaitable(client: Any) -> Any:
    """``client`` as the async cores expect it: a sync client wrapped, an async one as it is."""
    return client if is_async_client(client) else _AwaitableClient(client)


def plain(client: Any) -> Any:
    """The client an ``awaitable(...)`` wrapper wraps (``Transport`` takes sync clients as they are)."""
    return client.client if isinstance(client, _AwaitableClient) else client


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """The result of ``coro``, a core coroutine over a sync client (``awaitable`` / ``Transport``)."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    coro.close()
    raise RuntimeError("run_sync: the coroutine waited on real I/O; it runs only over a synchronous client")
