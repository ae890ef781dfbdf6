"""StreamMachine against a real local Redis Cluster (3 masters on loopback, started by this module).

Stream names are hash-tagged ("{orders}") so a stream and its dead-letter
stream ("{orders}:dead") share a slot; untagged names work too (the
dead-letter move is then XADD then XACK, not one MULTI).
"""

from __future__ import annotations

import asyncio
import logging

import pytest
import redis
from redis.cluster import RedisCluster as SyncCluster
from redis.crc import key_slot

from streammachine import App, ConsumerConfig, RedisConnection, Storage
from streammachine.config import Settings
from streammachine.engine.consumer import StreamConsumer
from streammachine.engine.specs import AgentSpec, AgentStats
from streammachine.redis.transport import same_slot
from streammachine.testing import LocalCluster
from tests.helpers import wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(120)]

KNOBS = ConsumerConfig(count=50, block_ms=100, retry_delay_ms=50, claim_idle_ms=800, max_deliveries=2)
# Tags chosen to land on three different masters (slots 0-5460, 5461-10922, 10923-16383).
TAGGED = ["{orders}", "{ticks}", "{a}"]


@pytest.fixture(scope="session")
def cluster(tmp_path_factory):
    with LocalCluster(tmp_path_factory.mktemp("cluster"), masters=3) as local:
        yield local


@pytest.fixture
def cluster_url(cluster):
    client = SyncCluster.from_url(cluster.url.replace("redis+cluster://", "redis://"))
    client.flushall(target_nodes=SyncCluster.PRIMARIES)
    yield cluster.url
    client.close()


@pytest.fixture
def sync_cluster(cluster_url):
    client = SyncCluster.from_url(cluster_url.replace("redis+cluster://", "redis://"), decode_responses=True)
    yield client
    client.close()


@pytest.fixture
async def apps():
    made = []
    yield made
    for app in made:
        await app.shutdown()


def make_app(apps, url, name="cl", **kwargs) -> App:
    kwargs.setdefault("consumer_config", KNOBS)
    kwargs.setdefault("grace_seconds", 5)
    app = App(name, redis_url=url, **kwargs)
    apps.append(app)
    return app


def test_local_cluster_is_three_masters_covering_all_slots(cluster):
    info = redis.Redis(port=cluster.ports[0], password=cluster.password).execute_command("CLUSTER", "INFO").decode()
    assert "cluster_state:ok" in info and "cluster_known_nodes:3" in info and "cluster_slots_ok:16384" in info
    owners = {key_slot(name.encode()) * 3 // 16384 for name in TAGGED}
    assert owners == {0, 1, 2}, "the test streams should spread over all three masters"


async def test_redis_connection_on_cluster(cluster_url, sync_cluster):
    async with RedisConnection(url=cluster_url) as conn:
        assert conn.is_cluster
        assert await conn.health_check()
        for stream in TAGGED:
            ids = await conn.pipeline_xadd(stream, [{"i": i} for i in range(250)])
            assert len(ids) == 250 and ids == sorted(ids, key=lambda x: tuple(map(int, x.split("-"))))
        assert await conn.xadd("plain", {"x": 1})
        assert cluster_url.split("@")[0].split(":")[-1] not in repr(conn)
    assert [sync_cluster.xlen(s) for s in TAGGED] == [250, 250, 250]


async def test_app_consumes_tagged_streams_on_every_master(apps, cluster_url, sync_cluster):
    app = make_app(apps, cluster_url)
    seen: dict = {s: [] for s in TAGGED}
    for stream in TAGGED:

        @app.agent(stream, group="g", concurrency=2, name=f"agent{stream}")
        async def handle(message, _stream=stream):
            seen[_stream].append(message.key)

    await app.startup()
    for stream in TAGGED:
        await app.send_batch(stream, [{"n": i} for i in range(300)])
    await wait_until(lambda: all(len(v) >= 300 for v in seen.values()), 20, what="300 per stream handled")
    await wait_until(lambda: all(sync_cluster.xpending(s, "g")["pending"] == 0 for s in TAGGED), 10, what="all acked")
    assert all(len(set(v)) == 300 for v in seen.values())
    rows = {r["stream"]: r for r in (await app.status()).rows()}
    assert all(rows[s]["processed"] == 300 and rows[s]["pending"] == 0 for s in TAGGED)
    health = await app.health_check()
    assert health["status"] == "healthy" and health["redis"] == "connected"


async def test_dead_letter_same_slot_and_cross_slot(apps, cluster_url, sync_cluster, caplog):
    """Regression: on a cluster the dead-letter MULTI (XADD dlq + XACK source) was CROSSSLOT for an untagged
    stream and killed the consumer task; now tagged names stay atomic and untagged ones move in two steps."""
    assert same_slot(_cluster_client(cluster_url), "{ticks}", "{ticks}:dead")
    assert not same_slot(_cluster_client(cluster_url), "plain", "plain:dead")
    app = make_app(apps, cluster_url)
    good = []
    for stream in ("{ticks}", "plain"):

        @app.agent(stream, group="g", name=f"dl-{stream}")
        async def handle(message):
            if message.message.get("poison"):
                raise ValueError("bad record")
            good.append(message.key)

    await app.startup()
    for stream in ("{ticks}", "plain"):
        await app.send(stream, {"poison": "1"})
        await app.send_batch(stream, [{"n": i} for i in range(50)])
    await wait_until(
        lambda: sync_cluster.xlen("{ticks}:dead") == 1 and sync_cluster.xlen("plain:dead") == 1,
        15,
        what="one dead letter per stream",
    )
    await wait_until(lambda: len(good) == 100, 10, what="the rest processed")
    for stream in ("{ticks}", "plain"):
        # the last read's ack rides with the next read: it may still be on its way when the handler has returned
        await wait_until(lambda: sync_cluster.xpending(stream, "g")["pending"] == 0, 10, what=f"{stream} all acked")
        [(_, fields)] = sync_cluster.xrange(f"{stream}:dead")
        assert (
            fields["poison"] == "1"
            and fields["_dlq_stream"] == stream
            and fields["_dlq_error"] == "ValueError: bad record"
        )
    await wait_until(  # counted once its XACK returned: the dead letter can be read before that
        lambda: all(app.stats(f"dl-{s}").dead_lettered == 1 for s in ("{ticks}", "plain")), what="both counted"
    )
    assert not [r for r in caplog.records if "CrossSlot" in r.getMessage() or "CROSSSLOT" in r.getMessage()]


def _cluster_client(url):
    from streammachine.redis.connection import make_client

    return make_client(url, max_connections=2)


async def test_orphans_reclaimed_per_stream_with_xautoclaim(apps, cluster_url, sync_cluster):
    """A consumer that read and died leaves entries pending on each stream; the agent XAUTOCLAIMs them."""
    for stream in TAGGED:
        sync_cluster.xgroup_create(stream, "g", id="0", mkstream=True)
        for i in range(20):
            sync_cluster.xadd(stream, {"n": i})
        assert len(sync_cluster.xreadgroup("g", "ghost", {stream: ">"}, count=20)[0][1]) == 20
    app = make_app(apps, cluster_url)
    handled = {s: set() for s in TAGGED}
    for stream in TAGGED:

        @app.agent(stream, group="g", name=f"reclaim{stream}")
        async def handle(message, _s=stream):
            handled[_s].add(message.key)

    await app.startup()
    await wait_until(lambda: all(len(v) == 20 for v in handled.values()), 15, what="orphans reclaimed")
    await wait_until(lambda: all(sync_cluster.xpending(s, "g")["pending"] == 0 for s in TAGGED), 5, what="acked")


async def test_process_workers_on_cluster(apps, cluster_url, sync_cluster, tmp_path):
    app = make_app(apps, cluster_url)
    out = tmp_path / "handled"

    @app.agent("{jobs}", group="g", processes=2, name="pw")
    def handle(message):
        with open(out, "a") as fh:
            fh.write(message.key + "\n")

    await app.startup()
    await app.send_batch("{jobs}", [{"n": i} for i in range(400)])
    await wait_until(lambda: out.exists() and len(set(out.read_text().split())) == 400, 40, what="400 handled")
    await wait_until(lambda: sync_cluster.xpending("{jobs}", "g")["pending"] == 0, 20, what="acked")

    def consumers():  # a worker joins the group with its first read, which a busy machine may delay
        return {c["name"] for c in sync_cluster.xinfo_consumers("{jobs}", "g")}

    await wait_until(lambda: len(consumers()) == 2, 20, what="one consumer per worker process")
    assert all(":pw:w" in name for name in consumers())


async def test_cluster_env_flag_with_plain_url(apps, cluster, cluster_url, monkeypatch):
    """STREAMMACHINE_CLUSTER=1 turns a plain redis:// URL (REDIS_URL) into a cluster client."""
    monkeypatch.setenv("REDIS_URL", cluster.nodes[1].url)
    monkeypatch.setenv("STREAMMACHINE_CLUSTER", "1")
    settings = Settings.from_env()
    assert settings.redis_cluster
    app = App("envcluster", settings=settings, consumer_config=KNOBS, grace_seconds=5)
    apps.append(app)
    got = []

    @app.agent("{env}", group="g")
    async def handle(message):
        got.append(message.key)

    await app.startup()
    assert app.redis.is_cluster
    await app.send_batch("{env}", [{"n": i} for i in range(30)])
    await wait_until(lambda: len(got) == 30, 10, what="30 handled")


async def test_redis_storage_backend_on_cluster(cluster_url):
    Storage.reset_instance()
    storage = Storage("redis", connection=RedisConnection(url=cluster_url))
    try:
        await storage.write("counter", 1)
        assert await storage.read("counter") == 1
        results = await asyncio.gather(*(storage.update("hits", lambda v: v + 1, 0) for _ in range(20)))
        assert sorted(results) == list(range(1, 21))
        assert await storage.keys() == ["counter", "hits"]
    finally:
        Storage.reset_instance()


async def test_consumer_survives_unexpected_errors(redis_url, caplog):
    """Regression: an exception outside TRANSIENT/ResponseError (a cluster client error, say) used to end the
    consumer task for good while health still said healthy. Now it is logged and retried with backoff."""
    from streammachine.redis.connection import make_client

    class Flaky(StreamConsumer):
        failures = 2

        async def _claim_orphans(self):
            if Flaky.failures:
                Flaky.failures -= 1
                raise RuntimeError("injected: slot map refresh failed")
            await super()._claim_orphans()

    got = []

    async def handler(message):
        got.append(message.key)

    client = make_client(redis_url, max_connections=2)
    spec = AgentSpec("flaky", handler, "flaky", "g", config=KNOBS.replace(claim_idle_ms=100))
    consumer = Flaky(client, spec, "c0", AgentStats())
    caplog.set_level(logging.ERROR, "streammachine.engine.consumer")
    consumer.start()
    try:
        await wait_until(lambda: Flaky.failures == 0, 5, what="both injected failures")
        await client.xadd("flaky", {"a": 1})
        await wait_until(lambda: got, 5, what="consumer still consuming after unexpected errors")
        assert not consumer.task.done()
        assert "injected: slot map refresh failed" in caplog.text
    finally:
        consumer.stop()
        await asyncio.wait([consumer.task], timeout=5)
        await client.aclose()


async def test_producer_and_inspect_on_async_and_sync_cluster_clients(cluster_url, sync_cluster):
    from streammachine.redis.inspect import stream_info_sync
    from streammachine.redis.producer import send_sync

    async with RedisConnection(url=cluster_url) as conn:
        ids = await conn.pipeline_xadd("{orders}", [{"i": i} for i in range(10)], atomic=True)  # one MULTI/EXEC
    ids.append(send_sync(sync_cluster, "{orders}", {"i": 10}, maxlen=None))
    assert [entry_id for entry_id, _ in sync_cluster.xrange("{orders}")] == ids
    sync_cluster.xgroup_create("{orders}", "g", id="0")
    info = stream_info_sync(sync_cluster, "{orders}", consumers=True, dead_letter_stream="{orders}:dead")
    assert (info["length"], info["first_id"], info["last_id"]) == (11, ids[0], ids[-1])
    assert [(g["name"], g["lag"], g["consumer_details"]) for g in info["groups"]] == [("g", 11, [])]
    assert info["dead_letter"] == {"stream": "{orders}:dead", "length": 0}
