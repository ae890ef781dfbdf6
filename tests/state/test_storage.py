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


async def test_process_wide_store_and_reset(storage):
    assert Storage() is storage  # the reference's Storage(): one per process
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


async def test_each_app_has_its_own_storage(redis_url):
    """Regression: Storage was one process-wide object that ignored its arguments after first use, so
    App("b", storage_backend="redis").storage was App("a")'s manager store."""
    from streammachine import App

    first = App("a", redis_url=redis_url)
    second = App("b", redis_url=redis_url, storage_backend="redis")
    try:
        assert first.storage.backend_name == "manager"
        assert second.storage.backend_name == "redis"
        assert first.storage is first.storage and first.storage is not second.storage
        await second.storage.write("k", 1)
        assert await first.storage.read("k") is None
        assert await second.storage.read("k") == 1
        assert Storage() is not first.storage  # the reference's process-wide store is another one
    finally:
        first.storage.close()
        await second.redis.close()


def test_process_wide_storage_refuses_another_backend():
    Storage.reset_instance()
    store = Storage()
    assert Storage("manager") is store and store.backend_name == "manager"
    with pytest.raises(ValueError, match=r"already a 'manager' store"):
        Storage("redis")


def test_manager_process_exits_with_its_app_process(redis_url, tmp_path):
    """A SIGKILLed app cannot stop its storage Manager: the Manager notices and exits instead of lingering."""
    import subprocess
    import sys
    import textwrap

    from tests.helpers import process_gone, wait_until_sync

    pid_file = tmp_path / "manager.pid"
    script = tmp_path / "owner.py"
    script.write_text(
        textwrap.dedent(f"""
        import asyncio, time
        from streammachine import App
        app = App("owner", redis_url={redis_url!r})
        asyncio.run(app.storage.write("k", 1))
        open({str(pid_file)!r}, "w").write(str(app.storage._backend._manager._process.pid))
        time.sleep(120)
    """)
    )
    owner = subprocess.Popen([sys.executable, str(script)])
    try:
        manager = int(wait_until_sync(lambda: pid_file.exists() and pid_file.read_text(), 20, what="the manager"))
        owner.kill()
        owner.wait(10)

        wait_until_sync(lambda: process_gone(manager), 10, what="the orphaned Manager to exit")
    finally:
        owner.kill()
