"""Storage: the reference API on both backends, atomic updates across processes."""

import asyncio
import multiprocessing

import pytest

from streammachine import Storage
from streammachine.redis.connection import RedisConnection


@pytest.fixture(params=["manager", "redis"])
async def storage(request, redis_url):
    Storage.reset_instance()
    connection = RedisConnection(url=redis_url)
    store = Storage(request.param, connection=connection)
    yield store
    Storage.reset_instance()
    await connection.close()


async def test_reference_api(storage):
    assert await storage.read("missing", default=7) == 7
    await storage.write("counter", 1)
    await storage.write("config", {"a": [1, 2]})
    assert await storage.read("counter") == 1
    assert await storage.read("config") == {"a": [1, 2]}
    assert await storage.exists("counter") and not await storage.exists("nope")
    assert sorted(await storage.keys()) == ["config", "counter"]
    assert await storage.delete("counter") is True
    assert await storage.delete("counter") is False
    await storage.clear()
    assert await storage.keys() == []


async def test_singleton_and_reset(storage):
    assert Storage() is storage
    Storage.reset_instance()
    assert Storage() is not storage


async def test_concurrent_increments_lose_nothing(storage):
    await asyncio.gather(*(storage.incr("n") for _ in range(50)))
    assert await storage.read("n") == 50
    assert await storage.update("n", lambda v: v * 2) == 100


def _hammer(count):
    async def go():
        store = Storage()
        for _ in range(count):
            await store.incr("shared")

    asyncio.run(go())


async def test_manager_backend_is_shared_with_forked_processes():
    Storage.reset_instance()
    store = Storage("manager")
    store.prepare_for_fork()
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_hammer, args=(100,)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        await asyncio.to_thread(p.join, 30)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    assert await store.read("shared") == 300


async def test_redis_backend_rejects_non_json_values(redis_url):
    Storage.reset_instance()
    store = Storage("redis", connection=RedisConnection(url=redis_url))
    with pytest.raises(TypeError, match="storage key 'obj'"):
        await store.write("obj", object())


def test_unknown_backend_is_a_clear_error():
    Storage.reset_instance()
    with pytest.raises(ValueError, match="backend='disk'"):
        Storage("disk")
