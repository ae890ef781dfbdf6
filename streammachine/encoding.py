"""Turning Python records into stream fields.

str, bytes, int and float go as they are; dict, list and tuple as JSON
(orjson); bool as JSON ``true``/``false``. Anything else is a TypeError that
names the field, so a bad record never half-reaches Redis.
"""
from __future__ import annotations

import numbers
from typing import Any, Mapping

import orjson

_AS_IS = frozenset((str, bytes, int, float))
_AS_JSON = frozenset((dict, list, tuple, bool))


def encode_value(topic: str, field: str, value: Any) -> Any:
    kind = type(value)
    if kind in _AS_IS:
        return value
    if kind in _AS_JSON or isinstance(value, (Mapping, list, tuple)):
        try:
            return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)
        except TypeError as exc:
            raise TypeError(f"stream {topic!r}, field {field!r}: value is not JSON-serialisable ({exc})") from None
    if isinstance(value, str):
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    # numpy scalars and other numbers: redis-py would send their repr ("np.float64(1.5)")
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    raise TypeError(
        f"stream {topic!r}, field {field!r}: cannot send a {kind.__name__} ({value!r:.80}); "
        "expected str, bytes, int, float, bool, dict or list"
    )


def encode_record(topic: str, record: Mapping[str, Any]) -> dict:
    """Validate and encode one record; the common all-scalar case costs one pass."""
    if not isinstance(record, Mapping):
        raise TypeError(f"stream {topic!r}: a record must be a dict of fields, got {type(record).__name__}")
    if not record:
        raise ValueError(f"stream {topic!r}: a record needs at least one field (Redis streams have no empty entries)")
    out = None
    for field, value in record.items():
        if type(field) is not str and type(field) is not bytes:
            raise TypeError(f"stream {topic!r}: field name {field!r} must be str, got {type(field).__name__}")
        if type(value) not in _AS_IS:
            if out is None:
                out = dict(record)
            out[field] = encode_value(topic, field, value)
    return record if out is None else out
