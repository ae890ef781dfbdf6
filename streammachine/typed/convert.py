"""Validating plain dataclasses, with no dependency: values from an entry -> a dataclass instance.

pydantic models and msgspec Structs validate themselves; a plain dataclass
does not, so this module checks and converts each field against its
annotation: ``str``, ``bytes``, ``int``, ``float``, ``bool``, ``Decimal``,
``datetime``/``date``/``time``/``timedelta``, ``UUID``, enums, ``Literal``,
``Optional``/unions, ``list``/``tuple``/``set``/``dict`` of those, nested
dataclasses (and nested pydantic models or msgspec Structs), ``Any``.
Converters are compiled once per dataclass, so a decode is a walk over
closures. Every bad field is reported, not just the first.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import datetime
import decimal
import enum
import sys
import types
import typing
import uuid
from typing import Any, Callable, Dict, List

from streammachine.typed.errors import MISSING, FieldError

Converter = Callable[[Any, str], Any]


class Invalid(Exception):
    """Raised by a converter: the fields that did not fit."""

    def __init__(self, errors: List[FieldError]) -> None:
        super().__init__(errors)
        self.errors = errors


def _fail(path: str, value: Any, expected: str) -> typing.NoReturn:
    raise Invalid([FieldError(path, value, expected)])


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


_TRUE = frozenset(("true", "1", "yes", "on"))
_FALSE = frozenset(("false", "0", "no", "off"))


def _to_str(value: Any, path: str) -> str:
    if type(value) is str:
        return value
    _fail(path, value, "expected a string")


def _to_bool(value: Any, path: str) -> bool:
    if type(value) is bool:
        return value
    if type(value) is int and value in (0, 1):
        return bool(value)
    if type(value) is str:
        lowered = value.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
    _fail(path, value, "expected a boolean (true/false)")


def _to_int(value: Any, path: str) -> int:
    kind = type(value)
    if kind is int:
        return value
    if kind is float and value.is_integer():
        return int(value)
    if kind is str:
        try:
            return int(value.strip())
        except ValueError:
            pass
    _fail(path, value, "expected an integer")


def _to_float(value: Any, path: str) -> float:
    kind = type(value)
    if kind is float or kind is int:
        return float(value)
    if kind is str:
        try:
            return float(value)
        except ValueError:
            pass
    _fail(path, value, "expected a number")


def _to_bytes(value: Any, path: str) -> bytes:
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if type(value) is str:
        return value.encode("utf-8")
    _fail(path, value, "expected bytes")


def _to_decimal(value: Any, path: str) -> decimal.Decimal:
    if type(value) in (str, int, float):
        try:
            return decimal.Decimal(str(value))
        except decimal.InvalidOperation:
            pass
    elif isinstance(value, decimal.Decimal):
        return value
    _fail(path, value, "expected a decimal number")


def _iso(kind: type, what: str) -> Converter:
    def convert(value: Any, path: str) -> Any:
        if type(value) is kind:
            return value
        if type(value) is str:
            try:
                return kind.fromisoformat(value)  # type: ignore[attr-defined]
            except ValueError:
                pass
        _fail(path, value, f"expected {what} in ISO 8601")

    return convert


def _to_timedelta(value: Any, path: str) -> datetime.timedelta:
    if isinstance(value, datetime.timedelta):
        return value
    if type(value) in (int, float):
        return datetime.timedelta(seconds=value)
    if type(value) is str:
        try:
            return datetime.timedelta(seconds=float(value))
        except ValueError:
            pass
    _fail(path, value, "expected a duration in seconds")


def _to_uuid(value: Any, path: str) -> uuid.UUID:
    if isinstance(value, uuid.UUID):
        return value
    if type(value) is str:
        try:
            return uuid.UUID(value)
        except ValueError:
            pass
    _fail(path, value, "expected a UUID")


def _enum(kind: type) -> Converter:
    members = list(kind)  # type: ignore[call-overload]
    expected = "expected one of " + ", ".join(repr(m.value) for m in members)

    def convert(value: Any, path: str) -> Any:
        try:
            return kind(value)
        except ValueError:
            pass
        if type(value) is str:
            for member in members:
                if str(member.value) == value:
                    return member
        _fail(path, value, expected)

    return convert


def _literal(options: tuple) -> Converter:
    expected = "expected one of " + ", ".join(repr(o) for o in options)

    def convert(value: Any, path: str) -> Any:
        for option in options:
            if value == option and type(value) is type(option):
                return option
        for option in options:
            if type(value) is str and str(option) == value:
                return option
        _fail(path, value, expected)

    return convert


def _union(members: tuple) -> Converter:
    allows_none = type(None) in members
    converters = [compile_converter(m) for m in members if m is not type(None)]
    names = " or ".join(describe(m) for m in members)

    if len(converters) == 1:  # Optional[X]: X's own errors say more than "X or null"
        only = converters[0]

        def optional(value: Any, path: str) -> Any:
            return None if value is None and allows_none else only(value, path)

        return optional

    def convert(value: Any, path: str) -> Any:
        if value is None and allows_none:
            return None
        for converter in converters:
            try:
                return converter(value, path)
            except Invalid:
                continue
        _fail(path, value, f"expected {names}")

    return convert


def _sequence(item: Any, build: Callable, what: str) -> Converter:
    convert_item = compile_converter(item)

    def convert(value: Any, path: str) -> Any:
        if not isinstance(value, (list, tuple)):
            _fail(path, value, f"expected {what}")
        out, errors = [], []
        for index, element in enumerate(value):
            try:
                out.append(convert_item(element, f"{path}[{index}]"))
            except Invalid as exc:
                errors += exc.errors
        if errors:
            raise Invalid(errors)
        return build(out)

    return convert


def _fixed_tuple(items: tuple) -> Converter:
    converters = [compile_converter(i) for i in items]

    def convert(value: Any, path: str) -> Any:
        if not isinstance(value, (list, tuple)) or len(value) != len(converters):
            _fail(path, value, f"expected an array of {len(converters)} items")
        return tuple(c(v, f"{path}[{i}]") for i, (c, v) in enumerate(zip(converters, value)))

    return convert


def _mapping(key: Any, item: Any) -> Converter:
    convert_key, convert_item = compile_converter(key), compile_converter(item)

    def convert(value: Any, path: str) -> Any:
        if not isinstance(value, dict):
            _fail(path, value, "expected an object")
        out, errors = {}, []
        for k, v in value.items():
            try:
                out[convert_key(k, path)] = convert_item(v, _join(path, str(k)))
            except Invalid as exc:
                errors += exc.errors
        if errors:
            raise Invalid(errors)
        return out

    return convert


def _instance_of(kind: type) -> Converter:
    def convert(value: Any, path: str) -> Any:
        if isinstance(value, kind):
            return value
        _fail(path, value, f"expected {describe(kind)}")

    return convert


def _nested_model(kind: type) -> Converter:
    """A pydantic model or msgspec Struct inside a dataclass: it validates itself (paths prefixed)."""
    from streammachine.typed.models import codec_for

    def convert(value: Any, path: str) -> Any:
        if isinstance(value, kind):
            return value
        if not isinstance(value, dict):
            _fail(path, value, f"expected an object ({kind.__qualname__})")
        try:
            return codec_for(kind).validate(value)
        except Exception as exc:
            errors = getattr(exc, "errors", None)
            if isinstance(errors, list) and all(isinstance(e, FieldError) for e in errors):
                raise Invalid([e._replace(field=_join(path, e.field)) for e in errors]) from None
            raise

    return convert


def _any(value: Any, path: str) -> Any:
    return value


_SCALARS: Dict[Any, Converter] = {
    str: _to_str,
    bool: _to_bool,
    int: _to_int,
    float: _to_float,
    bytes: _to_bytes,
    decimal.Decimal: _to_decimal,
    datetime.datetime: _iso(datetime.datetime, "a datetime"),
    datetime.date: _iso(datetime.date, "a date"),
    datetime.time: _iso(datetime.time, "a time"),
    datetime.timedelta: _to_timedelta,
    uuid.UUID: _to_uuid,
    Any: _any,
    object: _any,
}

_UNION_TYPES: tuple = (typing.Union, types.UnionType) if sys.version_info >= (3, 10) else (typing.Union,)


def compile_converter(annotation: Any) -> Converter:
    """The converter of one annotation (raises TypeError for what it cannot check)."""
    if annotation in _SCALARS:
        return _SCALARS[annotation]
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return compile_converter(args[0])
    if origin in _UNION_TYPES:
        return _union(args)
    if origin is typing.Literal:
        return _literal(args)
    if origin in (list, collections.abc.Sequence, collections.abc.MutableSequence, collections.abc.Iterable):
        return _sequence(args[0] if args else Any, list, "an array")
    if origin in (set, collections.abc.Set, collections.abc.MutableSet):
        return _sequence(args[0] if args else Any, set, "an array")
    if origin is frozenset:
        return _sequence(args[0] if args else Any, frozenset, "an array")
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return _sequence(args[0], tuple, "an array")
        return _fixed_tuple(args)
    if origin in (dict, collections.abc.Mapping, collections.abc.MutableMapping):
        return _mapping(*(args or (Any, Any)))
    if isinstance(annotation, typing.TypeVar):
        return _any
    if annotation in (list, tuple, set, frozenset):
        return _sequence(Any, annotation, "an array")
    if annotation is dict:
        return _mapping(Any, Any)
    if isinstance(annotation, type):
        if issubclass(annotation, enum.Enum):
            return _enum(annotation)
        from streammachine.typed.models import model_kind

        kind = model_kind(annotation)
        if kind == "dataclass":
            return _lazy_dataclass(annotation)
        if kind is not None:
            return _nested_model(annotation)
        return _instance_of(annotation)
    raise TypeError(f"cannot check values against {annotation!r}")


def _lazy_dataclass(kind: type) -> Converter:
    """Compiled on first use, so a dataclass may refer to itself."""
    compiled: List[Callable] = []

    def convert(value: Any, path: str) -> Any:
        if isinstance(value, kind):
            return value
        if not isinstance(value, dict):
            _fail(path, value, f"expected an object ({kind.__qualname__})")
        if not compiled:
            compiled.append(dataclass_validator(kind))
        return compiled[0](value, path)

    return convert


def dataclass_validator(kind: type) -> Callable[..., Any]:
    """``validate(data, path="") -> instance`` for dataclass ``kind``; raises ``Invalid`` naming every bad field.

    Keys of ``data`` that are not fields are ignored (a dataclass has no rule for extra fields).
    """
    try:
        hints = typing.get_type_hints(kind)
    except Exception as exc:
        raise TypeError(f"cannot resolve the annotations of dataclass {kind.__qualname__}: {exc}") from None
    plan = []
    for spec in dataclasses.fields(kind):
        if not spec.init:
            continue
        required = spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING
        annotation = hints.get(spec.name, Any)
        plan.append((spec.name, compile_converter(annotation), required, describe(annotation)))

    def validate(data: dict, path: str = "") -> Any:
        kwargs, errors = {}, []
        for name, convert, required, what in plan:
            if name in data:
                try:
                    kwargs[name] = convert(data[name], f"{path}.{name}" if path else name)
                except Invalid as exc:
                    errors += exc.errors
            elif required:
                errors.append(FieldError(_join(path, name), MISSING, f"required: {what}"))
        if errors:
            raise Invalid(errors)
        try:
            return kind(**kwargs)
        except (TypeError, ValueError) as exc:  # a __post_init__ check
            raise Invalid([FieldError(path or kind.__qualname__, kwargs, f"{type(exc).__name__}: {exc}")]) from None

    return validate


_NAMES = {
    str: "a string",
    bool: "a boolean",
    int: "an integer",
    float: "a number",
    bytes: "bytes",
    decimal.Decimal: "a decimal number",
    datetime.datetime: "a datetime",
    datetime.date: "a date",
    datetime.time: "a time",
    datetime.timedelta: "a duration",
    uuid.UUID: "a UUID",
    type(None): "null",
}


def describe(annotation: Any) -> str:
    """``int`` -> "an integer"; used in messages saying what was expected."""
    if annotation in _NAMES:
        return _NAMES[annotation]
    origin = typing.get_origin(annotation)
    if origin in _UNION_TYPES:
        return " or ".join(describe(a) for a in typing.get_args(annotation))
    if origin is typing.Annotated:
        return describe(typing.get_args(annotation)[0])
    if origin is not None:
        return f"a {getattr(origin, '__name__', origin)}"
    return getattr(annotation, "__qualname__", None) or repr(annotation)
