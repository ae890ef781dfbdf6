"""Stream ids (redis/entries.py): one parser, and the id right after one, as the server orders them."""

import pytest

from streammachine.redis.entries import MAX_SEQUENCE, id_after, parse_stream_id


def test_id_after_is_the_next_id_the_server_would_order_after(sync_redis):
    ids = [
        sync_redis.xadd("s", {"n": n}, id=entry_id) for n, entry_id in enumerate(("5-1", "5-2", f"5-{MAX_SEQUENCE}"))
    ]
    ids.append(sync_redis.xadd("s", {"n": 3}, id="6-0"))
    for i, entry_id in enumerate(ids[:-1]):  # an exclusive range start: everything after, nothing skipped
        assert [e for e, _ in sync_redis.xrange("s", min=id_after(entry_id))] == ids[i + 1 :]
    assert id_after(b"5-1") == "5-2" and id_after(f"5-{MAX_SEQUENCE}") == "6-0"


@pytest.mark.parametrize("bad", ["5", "a-1", b"5-", None])
def test_id_after_refuses_what_is_not_an_id(bad):
    with pytest.raises(ValueError, match="stream id"):
        id_after(bad)
    with pytest.raises(ValueError, match="stream id"):
        parse_stream_id(bad)
