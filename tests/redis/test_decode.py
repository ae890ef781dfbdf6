"""decode_dict_bytes_to_utf8: the compiled twin gives exactly what the Python one gives."""

from __future__ import annotations

from collections import OrderedDict

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import streammachine
from streammachine._speedups import _decode_py, _has_cython_decode

try:
    from streammachine._speedups import _decode as _decode_c
except ImportError:  # not built
    _decode_c = None

IMPLEMENTATIONS = [_decode_py.decode_dict_bytes_to_utf8] + ([_decode_c.decode_dict_bytes_to_utf8] if _decode_c else [])
READERS = [_decode_py.entries_with_fields] + ([_decode_c.entries_with_fields] if _decode_c else [])

keys_and_values = st.one_of(st.binary(max_size=12), st.text(max_size=12), st.integers(), st.floats(allow_nan=False))


def test_the_package_exports_the_compiled_one_when_built():
    assert _has_cython_decode == (_decode_c is not None)
    assert streammachine.decode_dict_bytes_to_utf8 is IMPLEMENTATIONS[-1]


@pytest.mark.parametrize("decode", IMPLEMENTATIONS)
def test_decodes_stream_fields(decode):
    assert decode({b"symbol": b"AAPL", b"price": b"1.5", "str": "kept", b"bad": b"\xff\xfe"}) == {
        "symbol": "AAPL",
        "price": "1.5",
        "str": "kept",
        "bad": "\ufffd\ufffd",
    }
    assert decode({}) == {}
    assert decode(OrderedDict([(b"a", 1)])) == {"a": "1"}


@pytest.mark.parametrize("decode", IMPLEMENTATIONS)
@pytest.mark.parametrize("bad", [None, [(b"a", b"b")], b"ab"])
def test_non_mappings_fail_alike(decode, bad):
    with pytest.raises(AttributeError):
        decode(bad)


@pytest.mark.skipif(_decode_c is None, reason="the compiled decoder is not built")
@settings(max_examples=500, deadline=None)
@given(st.dictionaries(keys_and_values, keys_and_values, max_size=8))
def test_compiled_and_python_agree(raw):
    python, compiled = _decode_py.decode_dict_bytes_to_utf8(raw), _decode_c.decode_dict_bytes_to_utf8(raw)
    assert compiled == python
    assert list(compiled) == list(python)  # same order, same collisions resolved alike


@pytest.mark.parametrize("read", READERS)
def test_read_replies_become_id_field_pairs(read):
    entries = [[b"1-0", [b"a", b"1", b"b", b"2"]], [b"2-0", None], [b"3-0", [b"x", b"y", b"odd"]]]
    expected = [(b"1-0", {b"a": b"1", b"b": b"2"}), (b"2-0", None), (b"3-0", {b"x": b"y"})]
    assert read([[b"s", entries]]) == expected  # RESP2
    assert read({b"s": entries}) == expected  # RESP3
    assert read([]) == [] and read(None) == []


@pytest.mark.skipif(_decode_c is None, reason="the compiled decoder is not built")
@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(st.binary(max_size=6), st.one_of(st.none(), st.lists(st.binary(max_size=4), max_size=7))),
        max_size=6,
    )
)
def test_compiled_and_python_read_alike(entries):
    reply = [[b"s", [list(entry) for entry in entries]]]
    assert _decode_c.entries_with_fields(reply) == _decode_py.entries_with_fields(reply)
