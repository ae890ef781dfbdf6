"""A stage whose input and output streams are in different cluster slots: at-least-once with a ``_source`` field.

engine/commit.py promises, for keys that span slots: outputs written first,
then the entries acknowledged, so a crash anywhere loses nothing. These
tests run on a local 3-master cluster of their own.
"""

from __future__ import annotations

import logging

import pytest
from redis.cluster import RedisCluster as SyncCluster
from redis.crc import key_slot

from streammachine import App, ConsumerConfig
from streammachine.testing import LocalCluster
from tests.helpers import wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(120)]

KNOBS = ConsumerConfig(count=10, block_ms=100, retry_delay_ms=50, claim_idle_ms=1000)
SOURCE, TARGET = "{a}in", "{b}out"  # on two different masters of three (slots split evenly)


def master_of(name: str) -> int:
    return key_slot(name.encode()) * 3 // 16384


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with LocalCluster(tmp_path_factory.mktemp("cluster"), masters=3) as local:
        yield local


@pytest.fixture
def sync_cluster(cluster):
    client = SyncCluster.from_url(cluster.url.replace("redis+cluster://", "redis://"), decode_responses=True)
    client.flushall(target_nodes=SyncCluster.PRIMARIES)
    yield client
    client.close()


@pytest.fixture
async def stage_app(cluster):
    app = App("cross", redis_url=cluster.url, consumer_config=KNOBS, grace_seconds=5)

    @app.agent(SOURCE, group="g", output=TARGET, name="stage")
    async def stage(message):
        return {"n": message.message["n"]}

    yield app
    await app.shutdown()


def test_the_streams_are_on_different_masters():
    assert master_of(SOURCE) != master_of(TARGET)


async def test_cross_slot_commits_raise_no_error(stage_app, sync_cluster, caplog):
    caplog.set_level(logging.WARNING, "streammachine")
    await stage_app.startup()
    for n in range(5):
        await stage_app.send(SOURCE, {"n": n})
        await wait_until(lambda n=n: sync_cluster.xlen(TARGET) == n + 1, 10, what=f"output {n}")
    rows = sync_cluster.xrange(TARGET)
    assert [r[1]["n"] for r in rows] == [str(n) for n in range(5)]
    assert all(r[1]["_source"].startswith(SOURCE + "/") for r in rows)
    assert "unexpected" not in caplog.text and stage_app.stats("stage").reconnects == 0


async def test_an_entry_stays_pending_while_its_output_cannot_be_written(stage_app, sync_cluster, caplog):
    caplog.set_level(logging.WARNING, "streammachine")
    sync_cluster.set(TARGET, "not a stream")  # every XADD to the output fails, on its own master
    await stage_app.startup()
    await stage_app.send(SOURCE, {"n": 0})
    await wait_until(lambda: "WRONGTYPE" in caplog.text, 10, what="a commit that could not write its output")
    pending = sync_cluster.xpending(SOURCE, "g")["pending"]
    sync_cluster.delete(TARGET)  # the retried commit can now write the output
    await wait_until(lambda: sync_cluster.exists(TARGET) and sync_cluster.xlen(TARGET) == 1, 10, what="the retry")
    assert pending == 1, "acknowledged while its output was not written"
