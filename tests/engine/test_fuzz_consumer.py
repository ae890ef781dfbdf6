"""Fuzzing what agents read: entries with arbitrary binary fields (written straight to the stream, as any
other producer could). A handler that chokes on one retries it, then dead-letters it; valid entries after it
are still consumed, no consumer dies, nothing is lost."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streammachine import App, ConsumerConfig
from streammachine.embedded import EmbeddedServer
from tests.helpers import wait_until_sync

KNOBS = ConsumerConfig(count=20, block_ms=50, retry_delay_ms=10, claim_idle_ms=2000, max_deliveries=2)

garbage_entry = st.dictionaries(
    st.one_of(st.binary(min_size=0, max_size=16), st.sampled_from([b"n", b"payload", b"sent", b"", b"\xff\xfe"])),
    st.one_of(
        st.binary(max_size=64),
        st.sampled_from([b"", b"nan", b"-inf", b"1e999", b"{", b"\x00" * 8]),
        st.integers(-(10**30), 10**30).map(lambda n: str(n).encode()),
    ),
    min_size=1,
    max_size=6,
)


class RunningApp:
    """An App on its own event loop in a background thread, so hypothesis can drive it from plain tests."""

    def __init__(self, url: str) -> None:
        self.app = App("garbage", redis_url=url, consumer_config=KNOBS, grace_seconds=5)
        self.handled: Counter = Counter()
        self.lock = threading.Lock()

        @self.app.agent("garbage", group="g", concurrency=2, name="eat")
        async def eat(message):
            # what real handlers do with a message, any of which may meet garbage
            message.message, message.timer, message.latency_ms, message.timestamp_ms
            count = int(message.message["n"])  # KeyError/ValueError on garbage: retried, then dead-lettered
            if b"payload" in message.fields:
                message.json("payload")
            with self.lock:
                self.handled[message.key] += 1
            return count

        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def call(self, coro, timeout: float = 30):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def __enter__(self) -> RunningApp:
        self.thread.start()
        self.call(self.app.startup())
        return self

    def __exit__(self, *exc) -> None:
        self.call(self.app.shutdown())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture(scope="module")
def garbage_app(tmp_path_factory):
    with EmbeddedServer(tmp_path_factory.mktemp("garbage"), appendonly=False) as server:
        with RunningApp(server.url) as running:
            client = redis.Redis.from_url(server.url)
            yield running, client
            client.close()


def dead_lettered(client) -> set:
    return {fields[b"_dlq_id"].decode() for _, fields in client.xrange("garbage:dead")}


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(entries=st.lists(garbage_entry, min_size=1, max_size=8))
def test_garbage_entries_never_stop_an_agent(garbage_app, entries):
    running, client = garbage_app
    ids = [client.xadd("garbage", fields).decode() for fields in entries]
    marker = client.xadd("garbage", {"n": "1", "payload": "[1, 2]"}).decode()
    wait_until_sync(lambda: running.handled[marker] >= 1, 15, what="the valid entry after the garbage handled")
    wait_until_sync(
        lambda: all(i in running.handled or i in dead_lettered(client) for i in ids),
        15,
        what="every garbage entry handled or dead-lettered",
    )
    dead = dead_lettered(client)
    assert not any(i in running.handled and i in dead for i in ids), "an entry was both handled and dead-lettered"
    consumers = running.app._runners["eat"].consumers
    assert consumers and all(not c.task.done() for c in consumers), "a consumer task died"
    assert running.call(running.app.health_check())["status"] == "healthy"


def test_garbage_run_left_nothing_pending(garbage_app):
    running, client = garbage_app
    wait_until_sync(lambda: client.xpending("garbage", "g")["pending"] == 0, 10, what="nothing pending")
    stats = running.app.stats("eat")
    assert stats.dead_lettered > 0, "no garbage was dead-lettered: the fuzzing did not reach the failure path"
    assert stats.processed >= len(running.handled)
