"""The one XADD path (redis/producer.py): maxlen everywhere, atomic batches, per-record outcomes."""

from __future__ import annotations

import pytest
import redis

from streammachine import App, RedisConnection
from streammachine.cli import main as cli_main
from streammachine.console import send as console_send
from streammachine.redis.producer import PIPELINE_CHUNK, BatchSendError, send_sync

MAXLEN = 3


@pytest.fixture
def trimming_server(private_server, monkeypatch):
    """A server whose stream nodes hold 2 entries, so ``MAXLEN ~ 3`` keeps at most 5 (not the default 100s)."""
    client = redis.Redis.from_url(private_server.url, decode_responses=True)
    client.config_set("stream-node-max-entries", 2)
    monkeypatch.setenv("STREAMMACHINE_STREAM_MAXLEN", str(MAXLEN))
    yield private_server.url, client
    client.close()


async def test_every_producer_honours_stream_maxlen(trimming_server, capsys):
    """Regression: `%streammachine send` (console.send) passed no maxlen; the others did. One path now."""
    url, client = trimming_server
    app = App("trim", redis_url=url)
    async with RedisConnection(url=url) as connection:
        for i in range(20):
            await app.send("app.send", {"i": i})
            await connection.xadd("xadd", {"i": i})
            assert cli_main(["--redis-url", url, "send", "cli", f"i={i}"]) == 0
            console_send(client, "magic", [f"i={i}"], maxlen=app.config.stream_maxlen)
        await app.send_batch("send_batch", [{"i": i} for i in range(20)])
        await connection.pipeline_xadd("pipeline_xadd", [{"i": i} for i in range(20)])
        await connection.pipeline_xadd("atomic", [{"i": i} for i in range(20)], atomic=True)
    await app.redis.close()
    capsys.readouterr()
    lengths = {s: client.xlen(s) for s in ("app.send", "xadd", "cli", "magic", "send_batch", "pipeline_xadd", "atomic")}
    assert all(MAXLEN <= n <= MAXLEN + 2 for n in lengths.values()), lengths
    assert client.xrevrange("magic", count=1)[0][1] == {"i": "19"}  # trimmed from the old end


def _fill_to_the_limit(client, headroom: int) -> None:
    client.config_set("maxmemory-policy", "noeviction")
    client.config_set("maxmemory", client.info("memory")["used_memory"] + headroom)


async def test_batch_refused_in_part_says_which_records_were_written(private_server):
    """Regression (issue 11 item 5): at maxmemory send_batch wrote part of a batch, then raised the first OOM
    reply without saying what landed; a resend duplicated the written records."""
    client = redis.Redis.from_url(private_server.url, decode_responses=True)
    _fill_to_the_limit(client, 1_000_000)
    records = [{"i": i, "blob": "x" * 200_000} for i in range(20)]
    async with RedisConnection(url=private_server.url) as connection:
        with pytest.raises(BatchSendError) as refused:
            await connection.pipeline_xadd("big", records)
        error = refused.value
        assert 0 < len(error.written) < 20 and not error.unsent
        assert set(error.errors) == set(range(20)) - set(error.written)
        assert all("maxmemory" in str(e) for e in error.errors.values())
        assert "records written" in str(error) and "OutOfMemoryError" in str(error)
        assert [entry_id for entry_id, _ in client.xrange("big")] == [error.ids[i] for i in error.written]

        client.config_set("maxmemory", 0)
        retry = [records[i] for i in sorted(error.errors)]  # only what was not written
        await connection.pipeline_xadd("big", retry)
    assert sorted(int(fields["i"]) for _, fields in client.xrange("big")) == list(range(20))  # no duplicates
    client.close()


async def test_atomic_batch_is_all_or_nothing(private_server):
    client = redis.Redis.from_url(private_server.url, decode_responses=True)
    _fill_to_the_limit(client, 1_000_000)
    records = [{"i": i, "blob": "x" * 200_000} for i in range(20)]
    async with RedisConnection(url=private_server.url) as connection:
        # the same batch that is written in part without atomic=True: here nothing is written
        with pytest.raises(BatchSendError) as refused:
            await connection.pipeline_xadd("big", records, atomic=True)
        assert refused.value.atomic and refused.value.written == [] and set(refused.value.errors) == set(range(20))
        assert "none written" in str(refused.value)
        assert client.exists("big") == 0

        client.config_set("maxmemory", 0)
        many = [{"i": i} for i in range(PIPELINE_CHUNK + 10)]  # more than a chunk: still one transaction
        ids = await connection.pipeline_xadd("many", many, atomic=True)
    assert [entry_id for entry_id, _ in client.xrange("many")] == ids and len(ids) == len(many)
    client.close()


def test_sync_send_validates_before_sending(redis_url, sync_redis):
    with pytest.raises(ValueError, match=r"stream 's', field 'f': the value is not valid UTF-8"):
        send_sync(sync_redis, "s", {"ok": "1", "f": "\ud800"})
    with pytest.raises(TypeError, match="cannot send a set"):
        send_sync(sync_redis, "s", {"bad": {1}})
    assert sync_redis.exists("s") == 0
    new_id = send_sync(sync_redis, "s", {"nested": {"a": [1, 2]}, "flag": True}, maxlen=None)
    assert sync_redis.xrange("s") == [(new_id, {"nested": '{"a":[1,2]}', "flag": "true"})]
