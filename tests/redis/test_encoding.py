"""Record encoding and Message decoding."""

import numpy as np
import pytest

from streammachine.message import Message, message_from_entry
from streammachine.redis.records import encode_record


def test_scalars_pass_and_containers_become_json():
    out = encode_record("s", {"a": "x", "b": b"y", "c": 1, "d": 1.5, "e": {"k": [1]}, "f": [1, 2], "g": True})
    assert out["a"] == "x" and out["b"] == b"y" and out["c"] == 1 and out["d"] == 1.5
    assert out["e"] == b'{"k":[1]}' and out["f"] == b"[1,2]" and out["g"] == b"true"


def test_numpy_scalars_are_numbers_not_reprs():
    out = encode_record("s", {"f": np.float64(1.5), "i": np.int64(3)})
    assert out == {"f": 1.5, "i": 3} and type(out["f"]) is float and type(out["i"]) is int


@pytest.mark.parametrize(
    "record,match",
    [
        ({"x": None}, r"stream 's', field 'x': cannot send a NoneType"),
        ({"x": object()}, r"field 'x': cannot send a object"),
        ({"x": {"k": object()}}, r"field 'x': value is not JSON-serialisable"),
        ({1: "a"}, r"field name 1 must be str"),
    ],
)
def test_bad_values_name_field_and_type(record, match):
    with pytest.raises(TypeError, match=match):
        encode_record("s", record)


def test_empty_and_non_dict_records():
    with pytest.raises(ValueError, match="at least one field"):
        encode_record("s", {})
    with pytest.raises(TypeError, match="must be a dict"):
        encode_record("s", [("a", 1)])


def test_message_decoding_and_properties():
    m = message_from_entry("t", b"1700000000000-3", {b"sent": b"1700000000.5", b"v": "\u00e9".encode()}, "c1")
    assert m.key == "1700000000000-3" and m.id == m.key and m.timestamp_ms == 1700000000000
    assert m.message == {"sent": "1700000000.5", "v": "\u00e9"}
    assert m.sent == 1700000000.5 and m.consumer_id == "c1" and m.data == (m.key, m.fields)
    assert m.timer.startswith("t: task ")
    # without a usable sent field, sent is when Redis accepted the entry: the id's time
    assert message_from_entry("t", b"1700000000250-0", {b"v": b"1"}, None).sent == 1700000000.25
    assert message_from_entry("t", "1700000000250-1", {"sent": "soon"}, None).sent == 1700000000.25
    assert Message().sent is None and Message(sent=5.0).sent == 5.0
    invalid = message_from_entry("t", b"1-0", {b"v": b"\xff\xfe"}, None)
    assert invalid.message == {"v": "\ufffd\ufffd"}  # undecodable bytes never raise
    assert Message().message == {}
