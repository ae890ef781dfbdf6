"""The consumer's hot path: the XACK of one read rides with the next XREADGROUP, written straight on a
pooled connection (streammachine.redis.resp); send_batch's XADDs likewise. Real servers, no mocks."""

import asyncio

import pytest
import redis
from redis.exceptions import ResponseError

from streammachine import ConsumerConfig
from streammachine.engine.consumer import StreamConsumer
from streammachine.engine.specs import AgentSpec
from tests.helpers import wait_until


async def pending_ids(client, stream: str, group: str) -> set:
    rows = await client.xpending_range(stream, group, min="-", max="+", count=1000)
    return {row["message_id"] for row in rows}


async def test_an_entry_is_acked_only_after_its_handler_returned(redis_url):
    client = redis.asyncio.Redis.from_url(redis_url)
    await client.xgroup_create("hot", "g", id="0", mkstream=True)
    ids = [await client.xadd("hot", {"i": i}) for i in range(30)]
    gate, blocked = asyncio.Event(), asyncio.Event()
    returned = []

    async def handle(message):
        if message.message["i"] == "15":
            blocked.set()
            await gate.wait()
        returned.append(message.key.encode())

    spec = AgentSpec(
        name="hot", handler=handle, stream="hot", group="g", config=ConsumerConfig(count=10, block_ms=100, start_id="0")
    )
    consumer = StreamConsumer(client, spec, "c")
    consumer.start()
    await asyncio.wait_for(blocked.wait(), 10)
    # the first read (0-9) was acked with the second (10-19), whose handler 15 has not returned
    pending = await pending_ids(client, "hot", "g")
    assert ids[15] in pending
    acked = set(ids[:20]) - pending
    assert acked and acked <= set(returned)
    gate.set()

    async def all_acked() -> bool:
        return (await client.xpending("hot", "g"))["pending"] == 0

    # the last acks go out with the next (blocking) read, not at shutdown
    await wait_until(lambda: len(returned) == 30, what="all handled")
    await wait_until(all_acked, what="all acked while the consumer keeps running")
    consumer.stop()
    await consumer.task
    await client.aclose()


async def test_failed_entries_stay_pending_while_the_rest_of_the_read_is_acked(redis_url):
    client = redis.asyncio.Redis.from_url(redis_url)
    await client.xgroup_create("mixed", "g", id="0", mkstream=True)
    ids = [await client.xadd("mixed", {"i": i}) for i in range(10)]

    def handle(message):
        if message.message["i"] in ("3", "7"):
            raise RuntimeError("boom")

    config = ConsumerConfig(count=10, block_ms=100, start_id="0", retry_delay_ms=60000, max_deliveries=5)
    consumer = StreamConsumer(
        client, AgentSpec(name="m", handler=handle, stream="mixed", group="g", config=config), "c"
    )
    consumer.start()

    async def only_failures_pending() -> bool:
        return await pending_ids(client, "mixed", "g") == {ids[3], ids[7]}

    await wait_until(only_failures_pending, what="the 8 good entries acked, the 2 failures pending")
    consumer.stop()
    await consumer.task
    assert consumer.stats.processed == 8 and consumer.stats.failed == 2
    await client.aclose()


async def test_shutdown_during_a_stalled_ack_round_trip_still_acks(app_factory, private_server):
    """The handler returns, the XACK+XREADGROUP goes out, the server freezes: stopping cancels the round trip,
    and the acks are sent again on the way out once the server answers."""
    app = app_factory(url=private_server.url, grace_seconds=20)
    handled = []

    @app.agent("stall", group="g", count=10, block_ms=100, start_id="0")
    def handle(message):
        handled.append(message.key)
        if len(handled) == 5:
            private_server.pause()  # the round trip carrying these acks will hang

    sync = redis.Redis.from_url(private_server.url)
    sync.xadd("stall", {"i": 0})
    for i in range(1, 5):
        sync.xadd("stall", {"i": i})
    await app.startup()
    try:
        await wait_until(lambda: len(handled) == 5, what="5 handled, server paused")
        shutdown = asyncio.get_running_loop().create_task(app.shutdown())
        await wait_until(lambda: app.state == "stopping", what="shutdown under way")
    finally:
        private_server.resume()
    await asyncio.wait_for(shutdown, 20)
    assert sync.xpending("stall", "g")["pending"] == 0
    sync.close()


async def test_send_batch_returns_ids_in_order_and_survives_an_error_reply(app_factory, redis_url):
    app = app_factory()
    raw = redis.Redis.from_url(redis_url)
    raw.set("not-a-stream", "x")
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        await app.send_batch("not-a-stream", [{"i": i} for i in range(3)])
    records = [{"i": i, "f": 1.5, "b": b"\x00\xff", "s": "é", "j": {"k": [1, 2]}} for i in range(7000)]  # 2 chunks
    ids = await app.send_batch("ok", records)
    entries = raw.xrange("ok")
    assert ids == [entry_id.decode() for entry_id, _ in entries]
    assert entries[6999][1] == {
        b"i": b"6999",
        b"f": b"1.5",
        b"b": b"\x00\xff",
        b"s": "é".encode(),
        b"j": b'{"k":[1,2]}',
    }
    raw.close()


def test_received_messages_match_the_dataclass_field_for_field():
    """received_messages skips the dataclass __init__: every field must still be exactly what Message(...) sets."""
    import dataclasses

    from streammachine import Message
    from streammachine.message import _sent_field, received_messages

    entries = [
        (b"1700000000000-0", {b"price": b"1.5"}),
        (b"1700000000001-7", {b"sent": b"1700000000.25", b"v": b"\xff"}),
        (b"1700000000002-0", {b"sent": b"not a number"}),
        (b"1700000000003-0", None),  # deleted while pending
        ("1700000000004-0", {"sent": "12.5", "k": "v"}),  # a client with decode_responses=True
    ]
    got = list(received_messages("topic", "c-0", 42.0, entries))
    assert got[3] is None
    for (entry_id, fields), message in zip(entries, got):
        if fields is None:
            continue
        key = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
        expected = Message("topic", key, _sent_field(fields), 42.0, "c-0", (key, fields))
        for field in dataclasses.fields(Message):
            assert getattr(message, field.name) == getattr(expected, field.name), field.name
        assert message.message == expected.message and message.timer == expected.timer
