"""Fuzzing the send boundary: any Python value either encodes and round-trips through a real server, or is a
TypeError/ValueError naming the stream and field, before anything reaches Redis."""

from __future__ import annotations

import asyncio
import math

import orjson
import pytest
import redis
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from streammachine import RedisConnection
from streammachine.redis.records import encode_record, encode_value, find_unencodable

json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
json_like = st.recursive(
    json_leaf,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12,
)
any_text = st.text(alphabet=st.characters(exclude_categories=()))  # lone surrogates included
anything = st.one_of(
    st.text(),
    any_text,
    st.binary(),
    st.integers(),
    st.floats(),
    st.booleans(),
    st.none(),
    json_like,
    st.sets(st.integers(), max_size=3),
    st.frozensets(st.text(max_size=3), max_size=3),
    st.complex_numbers(),
    st.dates(),
    st.decimals(allow_nan=False),
    st.fractions(),
    st.builds(object),
    st.tuples(st.integers(), st.text()),
    st.dictionaries(st.tuples(st.integers()), st.integers(), min_size=1, max_size=2),
    st.lists(st.sets(st.integers(), min_size=1), min_size=1, max_size=2),
    st.integers(min_value=2**64).map(lambda n: [n]),
)
field_names = st.one_of(
    st.text(max_size=10), st.binary(max_size=10), st.text(alphabet=st.characters(exclude_categories=()), max_size=4)
)
records = st.dictionaries(field_names, anything, min_size=1, max_size=5)


def check_encoded(topic, record, encoded) -> None:
    assert set(encoded) == set(record)
    for name, value in encoded.items():
        assert type(value) in (str, bytes, int, float), (name, value)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records)
def test_encode_record_encodes_or_names_the_field(record):
    try:
        encoded = encode_record("fuzz", record)
        error = find_unencodable("fuzz", [encoded])
        if error is not None:
            raise error
    except (TypeError, ValueError) as exc:
        text = str(exc)
        assert "'fuzz'" in text, text
        assert any(repr(name) in text for name in record), f"error does not name the field: {text}"
        return
    check_encoded("fuzz", record, encoded)


@settings(deadline=None)
@given(st.one_of(st.none(), st.integers(), st.text(), st.lists(st.integers()), st.tuples(st.text())))
def test_non_mapping_records_are_type_errors(record):
    with pytest.raises(TypeError, match="a record must be a dict"):
        encode_record("s", record)


def test_same_field_as_str_and_bytes_is_refused():
    """Regression: {"a": 1, b"a": 2} wrote two pairs for the one Redis field a; one value was lost on read."""
    with pytest.raises(ValueError, match="field names 'a' and b'a' are the same Redis field"):
        encode_record("s", {"a": 1, b"a": 2})


async def test_batch_with_a_bad_string_past_the_first_chunk_writes_nothing(redis_url, sync_redis):
    """Regression: pipeline_xadd sends 5000-record chunks one by one; a lone surrogate in a later chunk used to
    fail after the first chunk was written (and named no field)."""
    from streammachine.redis.producer import PIPELINE_CHUNK

    async with RedisConnection(url=redis_url) as conn:
        with pytest.raises(ValueError, match=r"stream 'half', field 'f': the value is not valid UTF-8"):
            await conn.pipeline_xadd("half", [{"a": "ok"}] * PIPELINE_CHUNK + [{"f": "\ud800"}])
        with pytest.raises(ValueError, match=r"field '\\udcff': the name is not valid UTF-8"):
            await conn.xadd("half", {"\udcff": "x"})
    assert sync_redis.xlen("half") == 0


def test_empty_record_is_a_value_error():
    with pytest.raises(ValueError, match="at least one field"):
        encode_record("s", {})


@settings(deadline=None)
@given(st.one_of(st.integers(), st.floats(), st.none(), st.tuples(st.integers())))
def test_non_string_field_names_are_type_errors(name):
    with pytest.raises(TypeError, match="field name"):
        encode_record("s", {name: "v"})


@settings(deadline=None)
@given(json_like)
def test_json_values_round_trip(value):
    assume(isinstance(value, (dict, list)))
    assert orjson.loads(encode_value("s", "f", value)) == value


@pytest.fixture(scope="module")
def sync_server(tmp_path_factory):
    from streammachine.embedded import EmbeddedServer

    with EmbeddedServer(tmp_path_factory.mktemp("enc"), appendonly=False) as server:
        yield server


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(record=records)
def test_send_round_trips_or_refuses_before_sending(sync_server, record):
    """Through the real send path (RedisConnection.xadd against a real server)."""

    async def send():
        async with RedisConnection(url=sync_server.url) as conn:
            return await conn.xadd("fuzz", record)

    client = redis.Redis.from_url(sync_server.url)
    before = client.xlen("fuzz")
    try:
        new_id = asyncio.run(send())
    except (TypeError, ValueError) as exc:
        assert "'fuzz'" in str(exc)
        assert client.xlen("fuzz") == before, "a refused record reached the stream"
        return
    finally:
        client.close()
    client = redis.Redis.from_url(sync_server.url)
    [(got_id, fields)] = client.xrange("fuzz", new_id, new_id)
    client.close()
    encoded = encode_record("fuzz", record)
    for name, value in encoded.items():
        key = name if isinstance(name, bytes) else name.encode()
        raw = fields[key]
        if isinstance(value, bytes):
            assert raw == value
        elif isinstance(value, str):
            assert raw == value.encode()
        elif isinstance(value, int):
            assert int(raw) == value
        else:
            assert float(raw) == value or (math.isnan(value) and raw.lower() == b"nan")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    good=st.lists(
        st.dictionaries(st.text(max_size=5), st.text(max_size=5), min_size=1, max_size=3), min_size=1, max_size=20
    ),
    bad=records,
    position=st.integers(min_value=0, max_value=20),
)
def test_send_batch_is_all_or_nothing(sync_server, good, bad, position):
    batch = list(good)
    batch.insert(min(position, len(batch)), bad)

    async def send():
        async with RedisConnection(url=sync_server.url) as conn:
            return await conn.pipeline_xadd("batchfuzz", batch)

    client = redis.Redis.from_url(sync_server.url)
    before = client.xlen("batchfuzz")
    try:
        ids = asyncio.run(send())
    except (TypeError, ValueError) as exc:
        assert "'batchfuzz'" in str(exc)
        assert client.xlen("batchfuzz") == before, "part of a refused batch was written"
    else:
        assert len(ids) == len(batch) and client.xlen("batchfuzz") == before + len(batch)
    finally:
        client.close()
