"""Models for stream entries: pydantic models, msgspec Structs and dataclasses, to and from stream fields.

An entry is a flat map of byte strings. ``ModelCodec(Model)`` knows, per
field of the model, how its value travels: text (``str``, dates, decimals,
UUIDs, str enums), a number or a boolean (parsed as JSON, so ``b"2"`` is
``2``), JSON (objects and arrays: dicts, lists, nested models), raw bytes;
for ``Any`` and mixed unions a value that looks like a JSON object or array
is parsed, anything else stays text. The model then validates with its own
rules (pydantic's and msgspec's lax modes, ``convert.py`` for dataclasses),
including what to do with extra fields (pydantic ``extra=``, msgspec
``forbid_unknown_fields``; a dataclass ignores them). A failure is an
``InvalidMessage`` naming each field, its value and what was expected.

Encoding is the reverse: top-level fields as their scalar (``None`` fields
are left out, so they come back as their default), nested values as JSON.
pydantic and msgspec are optional: they are looked up in ``sys.modules``,
so a program that never imported them never pays for them.
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import numbers
import sys
import typing
import uuid
from importlib import import_module
from typing import Any, Callable, Dict, List, Mapping, NamedTuple, Optional

import orjson

from streammachine.message import Message
from streammachine.typed.convert import Invalid, dataclass_validator, describe
from streammachine.typed.errors import MISSING, FieldError, InvalidMessage

KINDS = ("pydantic", "msgspec", "dataclass")

TEXT, JSON, AUTO, BYTES = "text", "json", "auto", "bytes"

_TEXT_TYPES = (str, decimal.Decimal, datetime.date, datetime.time, datetime.timedelta, uuid.UUID)
_JSON_TYPES = (int, float, bool, list, tuple, dict, set, frozenset)
_UNIONS = tuple(t for t in (typing.Union, getattr(__import__("types"), "UnionType", None)) if t is not None)
_JSON_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY


def model_kind(annotation: Any) -> Optional[str]:
    """ "pydantic", "msgspec", "dataclass", or None when ``annotation`` is not a model class."""
    if not isinstance(annotation, type) or issubclass(annotation, Message):  # Message is a dataclass, not a model
        return None
    if hasattr(annotation, "__pydantic_validator__") and hasattr(annotation, "__pydantic_fields__"):
        return "pydantic"  # a BaseModel or a pydantic dataclass
    msgspec = sys.modules.get("msgspec")
    if msgspec is not None and issubclass(annotation, msgspec.Struct):
        return "msgspec"
    if dataclasses.is_dataclass(annotation):
        return "dataclass"
    return None


def shape_of(annotation: Any) -> str:
    """How a field of this type travels in an entry: TEXT, JSON (numbers, booleans, containers), BYTES or AUTO."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return shape_of(typing.get_args(annotation)[0])
    if origin in _UNIONS:
        shapes = {shape_of(a) for a in typing.get_args(annotation) if a is not type(None)}
        return shapes.pop() if len(shapes) == 1 else AUTO
    if origin is typing.Literal:
        values = typing.get_args(annotation)
        return TEXT if all(isinstance(v, str) for v in values) else JSON
    if origin is not None:
        return JSON if isinstance(origin, type) and issubclass(origin, _JSON_TYPES) else AUTO
    if annotation in (bytes, bytearray):
        return BYTES
    if not isinstance(annotation, type):
        return AUTO
    if issubclass(annotation, enum.Enum):
        members = [m.value for m in annotation]
        if all(isinstance(v, str) for v in members):
            return TEXT
        return JSON if all(isinstance(v, (int, float)) for v in members) else AUTO
    if issubclass(annotation, _TEXT_TYPES):
        return TEXT
    if issubclass(annotation, _JSON_TYPES) or model_kind(annotation) is not None:
        return JSON
    if typing.is_typeddict(annotation):
        return JSON
    return AUTO


class ModelField(NamedTuple):
    name: str  # the attribute
    wire: str  # the entry's field name (an alias or rename, else the name)
    annotation: Any
    shape: str
    required: bool


def _fields(model: type, kind: str) -> List[ModelField]:
    if kind == "pydantic":
        out = []
        for name, info in model.__pydantic_fields__.items():  # type: ignore[attr-defined]
            alias = info.validation_alias if isinstance(info.validation_alias, str) else info.alias
            annotation = info.annotation
            out.append(ModelField(name, alias or name, annotation, shape_of(annotation), info.is_required()))
        return out
    if kind == "msgspec":
        msgspec = import_module("msgspec")
        return [
            ModelField(f.name, f.encode_name, f.type, shape_of(f.type), f.required)
            for f in msgspec.structs.fields(model)
        ]
    try:
        hints = typing.get_type_hints(model)
    except Exception as exc:
        raise TypeError(f"cannot resolve the annotations of {model.__qualname__}: {exc}") from None
    out = []
    for f in dataclasses.fields(model):
        if f.init:
            annotation = hints.get(f.name, Any)
            required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            out.append(ModelField(f.name, f.name, annotation, shape_of(annotation), required))
    return out


def _parse(raw: Any, shape: str) -> Any:
    """One field's value as the model's validator should see it."""
    if shape is BYTES:
        return raw if type(raw) is bytes else raw.encode("utf-8")
    text = raw.decode("utf-8") if type(raw) is bytes else raw
    if shape is TEXT:
        return text
    if shape is AUTO and text[:1] not in ("{", "["):
        return text
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return text  # the validator then names the field, the value and the type it expected


class ModelCodec:
    """Decodes entries into ``model`` instances and encodes instances into records."""

    def __init__(self, model: type) -> None:
        kind = model_kind(model)
        if kind is None:
            raise TypeError(f"{model!r} is not a pydantic model, a msgspec Struct or a dataclass")
        self.model = model
        self.kind = kind
        self.fields = _fields(model, kind)
        plan: Dict[Any, tuple] = {}
        for f in self.fields:
            plan[f.wire] = plan[f.wire.encode("utf-8")] = (f.wire, f.shape)
        self._plan = plan
        self._keep_extra = kind != "dataclass"  # pydantic and msgspec apply their own extra-field rules
        self.validate: Callable[[dict], Any] = getattr(self, f"_validator_{kind}")()

    # -- decoding ------------------------------------------------------------

    def values(self, fields: Mapping) -> dict:
        """The entry's fields as Python values keyed by wire name, before validation."""
        plan, keep_extra, loads, bad_json = self._plan, self._keep_extra, orjson.loads, orjson.JSONDecodeError
        data = {}
        try:
            for key, raw in fields.items():  # the hot loop of every typed entry: _parse, inlined
                entry = plan.get(key)
                if entry is None:
                    if keep_extra:
                        name = key.decode("utf-8") if type(key) is bytes else key
                        data[name] = raw.decode("utf-8") if type(raw) is bytes else raw
                    continue
                name, shape = entry
                if shape is TEXT:
                    data[name] = raw.decode("utf-8") if type(raw) is bytes else raw
                elif shape is JSON:
                    try:
                        data[name] = loads(raw)
                    except bad_json:
                        data[name] = raw.decode("utf-8") if type(raw) is bytes else raw
                else:
                    data[name] = _parse(raw, shape)
        except UnicodeDecodeError:
            raise self._not_text(fields) from None
        return data

    def _not_text(self, fields: Mapping) -> InvalidMessage:
        """The error for an entry with a field that is not UTF-8 text where text is expected."""
        errors = []
        for key, raw in fields.items():
            entry = self._plan.get(key)
            if type(raw) is bytes and (entry is None or entry[1] is not BYTES):
                try:
                    raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    name = entry[0] if entry else key.decode("utf-8", "replace")
                    errors.append(FieldError(str(name), raw, f"expected UTF-8 text ({exc.reason})"))
        return InvalidMessage(self.model, errors)

    def decode(self, fields: Mapping, stream: Optional[str] = None, entry_id: Optional[str] = None) -> Any:
        """An instance of the model from an entry's raw fields; ``InvalidMessage`` naming the entry if not valid."""
        try:
            return self.validate(self.values(fields))
        except InvalidMessage as exc:
            raise exc.located(stream, entry_id) from None

    def _validator_pydantic(self) -> Callable[[dict], Any]:
        validate_python = self.model.__pydantic_validator__.validate_python  # type: ignore[attr-defined]
        validation_error = import_module("pydantic").ValidationError
        model = self.model

        def validate(data: dict) -> Any:
            try:
                return validate_python(data)
            except validation_error as exc:
                errors = []
                for e in exc.errors(include_url=False):
                    path = ".".join(str(p) for p in e["loc"])
                    value = MISSING if e["type"] == "missing" else e.get("input")
                    errors.append(FieldError(path or model.__qualname__, value, e["msg"]))
                raise InvalidMessage(model, errors) from None

        return validate

    def _validator_msgspec(self) -> Callable[[dict], Any]:
        msgspec = import_module("msgspec")
        convert, validation_error, model = msgspec.convert, msgspec.ValidationError, self.model

        def validate(data: dict) -> Any:
            try:
                return convert(data, model, strict=False)
            except validation_error as exc:
                raise InvalidMessage(model, [_msgspec_error(str(exc), data)]) from None

        return validate

    def _validator_dataclass(self) -> Callable[[dict], Any]:
        check, model = dataclass_validator(self.model), self.model

        def validate(data: dict) -> Any:
            try:
                return check(data)
            except Invalid as exc:
                raise InvalidMessage(model, exc.errors) from None

        return validate

    # -- encoding ------------------------------------------------------------

    def encode(self, instance: Any, stream: str = "?") -> dict:
        """The record for ``instance``: field name -> str/bytes/int/float, nested values as JSON, None left out."""
        if self.kind == "pydantic" and hasattr(instance, "model_dump"):
            values = instance.model_dump(by_alias=True)
        elif self.kind == "msgspec":
            values = import_module("msgspec").to_builtins(instance, builtin_types=_MSGSPEC_AS_IS)
        else:
            values = {f.wire: getattr(instance, f.name) for f in self.fields}
        record = {}
        for name, value in values.items():
            encoded = _field_value(stream, name, value)
            if encoded is not None:
                record[name] = encoded
        if not record:
            raise ValueError(f"stream {stream!r}: {self.model.__qualname__} instance has no field that is not None")
        return record

    def describe_fields(self) -> List[dict]:
        """``[{"name", "type", "required"}]`` in the entry's terms, for the catalog and ``streammachine info``."""
        return [{"name": f.wire, "type": describe(f.annotation), "required": f.required} for f in self.fields]


_MSGSPEC_AS_IS = (bytes, bytearray, datetime.datetime, datetime.date, datetime.time, decimal.Decimal, uuid.UUID)


def _json_default(value: Any) -> Any:
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, (set, frozenset)):
        return list(value)
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8")
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json", by_alias=True)
    msgspec = sys.modules.get("msgspec")
    if msgspec is not None and isinstance(value, msgspec.Struct):
        return msgspec.to_builtins(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _field_value(stream: str, name: str, value: Any) -> Any:
    kind = type(value)
    if kind is str or kind is bytes or kind is int or kind is float:
        return value
    if value is None:
        return None
    if kind is bool:
        return b"true" if value else b"false"
    if isinstance(value, enum.Enum):
        return _field_value(stream, name, value.value)
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, (decimal.Decimal, uuid.UUID, str)):
        return str(value)
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    try:
        return orjson.dumps(value, default=_json_default, option=_JSON_OPTIONS)
    except TypeError as exc:
        raise TypeError(f"stream {stream!r}, field {name!r}: cannot encode a {kind.__name__} ({exc})") from None


def _msgspec_error(text: str, data: dict) -> FieldError:
    """msgspec says ``Expected `int`, got `str` - at `$.qty``` or ``Object missing required field `qty```."""
    message, _, where = text.partition(" - at `$")
    path = where.rstrip("`").lstrip(".")
    if "missing required field `" in message:
        field = message.split("missing required field `", 1)[1].rstrip("`")
        return FieldError(f"{path}.{field}" if path else field, MISSING, "required")
    return FieldError(path or "<entry>", _walk(data, path) if path else data, message)


def _walk(data: Any, path: str) -> Any:
    """The value at a msgspec path such as ``meta.src`` or ``legs[1].qty`` (MISSING if it is not there)."""
    current = data
    for part in path.replace("[", ".[").split("."):
        if not part:
            continue
        try:
            current = current[int(part[1:-1])] if part.startswith("[") else current[part]
        except (KeyError, IndexError, TypeError, ValueError):
            return MISSING
    return current


_CODECS: Dict[type, ModelCodec] = {}


def codec_for(model: type) -> ModelCodec:
    """The (cached) codec of a model class."""
    codec = _CODECS.get(model)
    if codec is None:
        codec = _CODECS[model] = ModelCodec(model)
    return codec


def as_record(stream: str, instance: Any) -> Optional[dict]:
    """A model instance as a record, or None when ``instance`` is not one (the records encoder's hook)."""
    kind = type(instance)
    if kind in _CODECS or model_kind(kind) is not None:
        return codec_for(kind).encode(instance, stream)
    return None


def json_schema(model: type) -> dict:
    """The JSON Schema of a model (pydantic's, msgspec's; for a dataclass whichever of the two is installed)."""
    kind = model_kind(model)
    pydantic = _optional("pydantic")
    msgspec = _optional("msgspec")
    if kind != "msgspec" and pydantic is not None:
        return pydantic.TypeAdapter(model).json_schema()
    if msgspec is not None:
        return _inline_top(msgspec.json.schema(model))
    codec = codec_for(model)
    return {
        "title": model.__name__,
        "type": "object",
        "properties": {f["name"]: {"description": f["type"]} for f in codec.describe_fields()},
        "required": [f["name"] for f in codec.describe_fields() if f["required"]],
    }


def _inline_top(schema: dict) -> dict:
    """msgspec answers ``{"$ref": "#/$defs/Trade", "$defs": {...}}``: put Trade's own schema at the top."""
    ref = schema.get("$ref", "")
    defs = dict(schema.get("$defs", {}))
    top = defs.pop(ref.rsplit("/", 1)[-1], None) if ref.startswith("#/$defs/") else None
    if top is None:
        return schema
    return {**top, "$defs": defs} if defs else top


def _optional(name: str) -> Any:
    try:
        return import_module(name)
    except ImportError:
        return None
