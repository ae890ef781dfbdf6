"""Fuzzing Message decoding: arbitrary bytes fields never crash it, and the compiled decoder (when built)
gives exactly what its pure-Python twin gives."""

from __future__ import annotations

import math

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streammachine import Message
from streammachine._speedups import _has_cython_decode, decode_dict_bytes_to_utf8
from streammachine._speedups._decode_py import decode_dict_bytes_to_utf8 as py_decode
from streammachine.message import _sent_field, message_from_entry

raw_fields = st.dictionaries(st.binary(max_size=12), st.binary(max_size=40), max_size=8)
mixed_fields = st.dictionaries(
    st.one_of(st.binary(max_size=8), st.text(max_size=8)),
    st.one_of(st.binary(max_size=20), st.text(max_size=20), st.integers(), st.floats()),
    max_size=6,
)
entry_ids = st.builds(lambda ms, seq: f"{ms}-{seq}", st.integers(0, 2**48), st.integers(0, 2**32))


@settings(deadline=None)
@given(raw_fields)
def test_decode_never_raises_and_keeps_every_field(fields):
    decoded = decode_dict_bytes_to_utf8(fields)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in decoded.items())
    # two distinct byte keys may only merge when both are invalid UTF-8 that replaces to the same text
    assert len(decoded) <= len(fields)
    for key, value in fields.items():
        try:
            assert decoded[key.decode()] == value.decode("utf-8", "replace") or len(decoded) < len(fields)
        except UnicodeDecodeError:
            pass


@pytest.mark.skipif(not _has_cython_decode, reason="compiled decoder not built")
@settings(deadline=None)
@given(mixed_fields)
def test_compiled_decoder_matches_python_twin(fields):
    assert decode_dict_bytes_to_utf8(fields) == py_decode(fields)


@settings(deadline=None)
@given(entry_ids, raw_fields, st.floats(allow_nan=False, allow_infinity=False, min_value=0, max_value=4e9))
def test_message_properties_never_crash(entry_id, fields, received):
    message = message_from_entry("topic", entry_id.encode(), fields, "c-0", received=received)
    assert message.key == entry_id and message.id == entry_id
    assert message.timestamp_ms == int(entry_id.split("-")[0])
    assert isinstance(message.message, dict) and message.fields is fields
    assert message.timer.startswith("topic: task ") and message.timer.endswith(" ms")
    latency = message.latency_ms
    assert latency is None or isinstance(latency, float)


@settings(deadline=None)
@given(st.binary(max_size=30))
def test_sent_field_is_a_float_or_none(raw):
    sent = _sent_field({b"sent": raw})
    assert sent is None or isinstance(sent, float)
    if sent is not None:
        assert float(raw) == sent or (math.isnan(sent) and math.isnan(float(raw)))


@settings(deadline=None)
@given(st.binary(max_size=30))
def test_message_json_parses_or_raises_a_value_error(raw):
    message = Message("t", "1-0", None, 0.0, "c", ("1-0", {b"payload": raw}))
    try:
        value = message.json("payload")
    except ValueError:  # orjson.JSONDecodeError is a ValueError
        return
    assert value == orjson.loads(raw)


def test_message_json_missing_field_names_it():
    message = Message("t", "1-0", None, 0.0, "c", ("1-0", {b"a": b"1"}))
    with pytest.raises(KeyError, match="no field 'b'"):
        message.json("b")


def test_empty_message():
    message = Message()
    assert message.message == {} and message.fields == {} and message.timestamp_ms is None
    assert message.timer == "None: task 0.00 ms"
