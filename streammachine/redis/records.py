"""Turning Python records into stream fields.

str, bytes, int and float go as they are; dict, list and tuple as JSON
(orjson); bool as JSON ``true``/``false``. Anything else is a TypeError that
names the field, so a bad record never half-reaches Redis.
"""

from __future__ import annotations

import numbers
from typing import Any, Mapping, Optional

import orjson

from streammachine.typed.models import as_record

_AS_IS: frozenset = frozenset((str, bytes, int, float))
_AS_JSON: frozenset = frozenset((dict, list, tuple, bool))


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


def encode_record(topic: str, record: Mapping[str, Any]) -> Mapping:
    """Validate and encode one record; the common all-scalar case costs one pass."""
    if type(record) is not dict and not isinstance(record, Mapping):  # a plain dict skips the ABC check
        model_record = as_record(topic, record)  # typed messages (#15): a pydantic/msgspec/dataclass instance
        if model_record is not None:
            return model_record
        raise TypeError(
            f"stream {topic!r}: a record must be a dict of fields or a model instance "
            f"(pydantic, msgspec, dataclass), got {type(record).__name__}"
        )
    if not record:
        raise ValueError(f"stream {topic!r}: a record needs at least one field (Redis streams have no empty entries)")
    out = None
    binary_names = False
    for field, value in record.items():
        if type(field) is not str:
            if type(field) is not bytes:
                raise TypeError(f"stream {topic!r}: field name {field!r} must be str, got {type(field).__name__}")
            binary_names = True
        if type(value) not in _AS_IS:
            if out is None:
                out = dict(record)
            out[field] = encode_value(topic, field, value)
    if binary_names:
        _check_name_clash(topic, record)
    return record if out is None else out


def _check_name_clash(topic: str, record: Mapping) -> None:
    """ "a" and b"a" would both be the Redis field a: one value would silently shadow the other."""
    seen: dict = {}
    for field in record:
        raw = field if type(field) is bytes else field.encode("utf-8", "surrogatepass")
        if raw in seen:
            raise ValueError(f"stream {topic!r}: field names {seen[raw]!r} and {field!r} are the same Redis field")
        seen[raw] = field


def find_unencodable(topic: str, records) -> Optional[ValueError]:
    """The first field whose name or str value is not valid UTF-8 text (lone surrogates), as an error naming it.

    Only non-ASCII strings are encoded to check, so the common case costs one ``isascii()`` per string.
    """
    for record in records:
        for field, value in record.items():
            for part, what in ((field, "name"), (value, "value")):
                if type(part) is str and not part.isascii():
                    try:
                        part.encode("utf-8")
                    except UnicodeEncodeError as exc:
                        return ValueError(
                            f"stream {topic!r}, field {field!r}: the {what} is not valid UTF-8 text ({exc.reason} "
                            f"at position {exc.start}); send bytes for binary data"
                        )
    return None
