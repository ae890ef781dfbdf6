"""Typed messages: decoding entries into pydantic models, msgspec Structs and dataclasses, and back.

Every model kind gets the same cases: valid, invalid (the error names the
field, the value and what was expected), nested, optional, extra fields.
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import uuid
from typing import Any, Dict, List, Literal, Optional

import msgspec
import pydantic
import pytest

from streammachine import Message
from streammachine.redis.records import encode_record
from streammachine.typed import MISSING, InvalidMessage, codec_for, decode, handler_model, json_schema, typed_handler
from streammachine.typed.models import model_kind


class Side(str, enum.Enum):
    BUY = "buy"
    SELL = "sell"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


# -- the same trade in three kinds ------------------------------------------------


class PMeta(pydantic.BaseModel):
    src: str
    tags: List[str] = []


class PTrade(pydantic.BaseModel):
    symbol: str
    qty: int
    price: float
    live: bool = False
    side: Side = Side.BUY
    meta: Optional[PMeta] = None
    note: Optional[str] = None


class MMeta(msgspec.Struct):
    src: str
    tags: List[str] = []


class MTrade(msgspec.Struct):
    symbol: str
    qty: int
    price: float
    live: bool = False
    side: Side = Side.BUY
    meta: Optional[MMeta] = None
    note: Optional[str] = None


@dataclasses.dataclass
class DMeta:
    src: str
    tags: List[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class DTrade:
    symbol: str
    qty: int
    price: float
    live: bool = False
    side: Side = Side.BUY
    meta: Optional[DMeta] = None
    note: Optional[str] = None


KINDS = [(PTrade, PMeta, "pydantic"), (MTrade, MMeta, "msgspec"), (DTrade, DMeta, "dataclass")]


def wire(record: dict) -> dict:
    """A record as a consumer reads it back: bytes names, bytes values."""
    out = {}
    for key, value in encode_record("t", record).items():
        out[key.encode()] = value if isinstance(value, bytes) else str(value).encode()
    return out


@pytest.mark.parametrize("trade, meta, kind", KINDS)
def test_valid_entry_decodes_numbers_as_numbers_and_json_as_objects(trade, meta, kind):
    codec = codec_for(trade)
    assert codec.kind == kind
    fields = {b"symbol": b"AAPL", b"qty": b"2", b"price": b"1.5", b"live": b"true", b"side": b"sell"}
    fields[b"meta"] = b'{"src": "web", "tags": ["a", "b"]}'
    got = codec.decode(fields)
    assert got == trade(
        symbol="AAPL", qty=2, price=1.5, live=True, side=Side.SELL, meta=meta(src="web", tags=["a", "b"])
    )
    assert type(got.qty) is int and type(got.price) is float and got.live is True


@pytest.mark.parametrize("trade, meta, kind", KINDS)
def test_optional_fields_take_their_defaults(trade, meta, kind):
    got = codec_for(trade).decode({b"symbol": b"X", b"qty": b"1", b"price": b"2"})
    assert got.meta is None and got.note is None and got.live is False and got.side is Side.BUY


@pytest.mark.parametrize("trade, meta, kind", KINDS)
def test_invalid_entry_names_the_field_the_value_and_what_was_expected(trade, meta, kind):
    fields = {b"symbol": b"AAPL", b"qty": b"two", b"price": b"1.5"}
    with pytest.raises(InvalidMessage) as caught:
        codec_for(trade).decode(fields, "trades", "5-0")
    error = caught.value
    assert error.stream == "trades" and error.entry_id == "5-0"
    assert [(e.field, e.value) for e in error.errors] == [("qty", "two")]
    assert "int" in error.errors[0].expected.lower()
    text = str(error)
    assert "entry 5-0 of stream 'trades'" in text and "'qty'" in text and "'two'" in text and trade.__name__ in text


@pytest.mark.parametrize("trade, meta, kind", KINDS)
def test_missing_required_field_is_reported_as_missing(trade, meta, kind):
    with pytest.raises(InvalidMessage) as caught:
        codec_for(trade).decode({b"symbol": b"AAPL", b"qty": b"1"})
    assert ("price", MISSING) in [(e.field, e.value) for e in caught.value.errors]
    assert "missing" in str(caught.value)


@pytest.mark.parametrize("trade, meta, kind", KINDS)
def test_invalid_nested_field_names_its_path(trade, meta, kind):
    fields = {b"symbol": b"A", b"qty": b"1", b"price": b"1", b"meta": b'{"tags": "nope"}'}
    with pytest.raises(InvalidMessage) as caught:
        codec_for(trade).decode(fields)
    paths = [e.field for e in caught.value.errors]
    # msgspec stops at the first error; pydantic and the dataclass checker report both
    assert "meta.src" in paths or "meta.tags" in paths
    if kind != "msgspec":
        assert {"meta.src", "meta.tags"} <= set(paths)


@pytest.mark.parametrize("trade, meta, kind", KINDS)
def test_extra_fields_are_ignored_by_default(trade, meta, kind):
    got = codec_for(trade).decode({b"symbol": b"A", b"qty": b"1", b"price": b"1", b"sent": b"123.4", b"x": b"y"})
    assert got.symbol == "A"


def test_extra_fields_follow_the_models_rule():
    class Strict(pydantic.BaseModel, extra="forbid"):
        a: int

    class Open(pydantic.BaseModel, extra="allow"):
        a: int

    class StrictStruct(msgspec.Struct, forbid_unknown_fields=True):
        a: int

    with pytest.raises(InvalidMessage, match="'b'"):
        codec_for(Strict).decode({b"a": b"1", b"b": b"2"})
    assert codec_for(Open).decode({b"a": b"1", b"b": b"2"}).model_extra == {"b": "2"}
    with pytest.raises(InvalidMessage, match="b"):
        codec_for(StrictStruct).decode({b"a": b"1", b"b": b"2"})


@pytest.mark.parametrize("trade, meta, kind", KINDS)
def test_encode_then_decode_gives_the_same_instance(trade, meta, kind):
    original = trade(symbol="AAPL", qty=3, price=2.25, live=True, side=Side.SELL, meta=meta(src="api", tags=["x"]))
    record = encode_record("trades", original)
    assert "note" not in record, "None fields are left out (they come back as their default)"
    assert record["qty"] == 3 and record["price"] == 2.25 and record["live"] == b"true" and record["side"] == "sell"
    assert codec_for(trade).decode(wire(original)) == original


def test_richer_field_types_round_trip_in_each_kind():
    when = datetime.datetime(2024, 5, 1, 9, 30, tzinfo=datetime.timezone.utc)
    ident = uuid.UUID(int=7)
    values = dict(
        at=when, amount=decimal.Decimal("1.10"), ident=ident, level=Level.HIGH, blob=b"\x00\xff", kind="b", ratio=None
    )

    class P(pydantic.BaseModel):
        at: datetime.datetime
        amount: decimal.Decimal
        ident: uuid.UUID
        level: Level
        blob: bytes
        kind: Literal["a", "b"]
        ratio: Optional[float] = 0.5

    class M(msgspec.Struct):
        at: datetime.datetime
        amount: decimal.Decimal
        ident: uuid.UUID
        level: Level
        blob: bytes
        kind: Literal["a", "b"]
        ratio: Optional[float] = 0.5

    @dataclasses.dataclass
    class D:
        at: datetime.datetime
        amount: decimal.Decimal
        ident: uuid.UUID
        level: Level
        blob: bytes
        kind: Literal["a", "b"]
        ratio: Optional[float] = 0.5

    for model in (P, M, D):
        instance = model(**values)
        back = codec_for(model).decode(wire(instance))
        assert (back.at, back.amount, back.ident, back.level, back.blob, back.kind) == (
            when,
            decimal.Decimal("1.10"),
            ident,
            Level.HIGH,
            b"\x00\xff",
            "b",
        ), model
        assert back.ratio == 0.5, "a None field travels as absent and comes back as the default"


def test_dataclass_checker_reports_every_bad_field_and_post_init_errors():
    @dataclasses.dataclass
    class Order:
        qty: int
        tags: Dict[str, int]
        legs: List[float]

        def __post_init__(self):
            if self.qty < 0:
                raise ValueError("qty must be >= 0")

    with pytest.raises(InvalidMessage) as caught:
        codec_for(Order).decode({b"qty": b"x", b"tags": b'{"a": "z"}', b"legs": b'[1, "q"]'})
    assert {e.field for e in caught.value.errors} == {"qty", "tags.a", "legs[1]"}
    with pytest.raises(InvalidMessage, match="qty must be >= 0"):
        codec_for(Order).decode({b"qty": b"-1", b"tags": b"{}", b"legs": b"[]"})


def test_a_json_field_that_is_not_json_is_reported_with_its_value():
    with pytest.raises(InvalidMessage) as caught:
        codec_for(PTrade).decode({b"symbol": b"A", b"qty": b"1", b"price": b"1", b"meta": b"{not json"})
    assert caught.value.errors[0].field == "meta" and caught.value.errors[0].value == "{not json"


def test_non_utf8_text_is_an_invalid_message_not_a_crash():
    with pytest.raises(InvalidMessage, match="UTF-8"):
        codec_for(PTrade).decode({b"symbol": b"\xff", b"qty": b"1", b"price": b"1"})


def test_any_field_parses_json_objects_and_keeps_other_text():
    @dataclasses.dataclass
    class Loose:
        payload: Any
        other: Any = None

    got = codec_for(Loose).decode({b"payload": b'{"a": [1]}', b"other": b"12"})
    assert got.payload == {"a": [1]} and got.other == "12"


def test_model_kind_and_message_is_not_a_model():
    assert [model_kind(k) for k, _, _ in KINDS] == ["pydantic", "msgspec", "dataclass"]
    assert model_kind(Message) is None and model_kind(dict) is None and model_kind(int) is None


def test_handler_detection():
    async def typed(trade: PTrade): ...

    async def with_record(trade: MTrade, record: Message): ...

    def batch(trades: List[DTrade], records: List[Message]): ...

    async def untyped(record: Message): ...

    async def bare(record): ...

    assert handler_model(typed) == (PTrade, False, False)
    assert handler_model(with_record) == (MTrade, False, True)
    assert handler_model(batch) == (DTrade, True, True)
    assert handler_model(untyped) is None and handler_model(bare) is None
    assert typed_handler(untyped, is_async=True, batch=False) is untyped


def test_string_annotations_resolve_in_the_handlers_module():
    namespace: dict = {}
    exec(
        "from __future__ import annotations\nasync def handle(trade: PTrade, record: Message) -> Undefined: ...\n",
        {"PTrade": PTrade, "Message": Message, "__name__": "cellmodule"},
        namespace,
    )
    assert handler_model(namespace["handle"]) == (PTrade, False, True)


def test_batch_annotation_must_match_the_agent(app_factory):
    app = app_factory()
    with pytest.raises(TypeError, match="batch=True"):

        @app.agent("s")
        async def wants_list(trades: List[PTrade]): ...

    with pytest.raises(TypeError, match=r"list\[PTrade\]"):

        @app.agent("s", batch=True)
        async def wants_one(trade: PTrade): ...


async def test_typed_wrapper_passes_the_message_and_the_return_value():
    seen = []

    async def handle(trade: PTrade, record: Message):
        seen.append((trade.qty, record.key, record.topic))
        return trade.qty * 2

    wrapper = typed_handler(handle, is_async=True, batch=False)
    message = Message(topic="t", key="1-0", data=("1-0", {b"symbol": b"A", b"qty": b"4", b"price": b"1"}))
    assert await wrapper(message) == 8
    assert seen == [(4, "1-0", "t")]
    assert decode(message, DTrade) == DTrade(symbol="A", qty=4, price=1.0)


def test_json_schema_of_each_kind_describes_the_model_at_the_top():
    for trade, _, _ in KINDS:
        schema = json_schema(trade)
        assert schema["title"] == trade.__name__, schema
        assert set(schema["required"]) == {"symbol", "qty", "price"}, trade
        assert schema["properties"]["qty"]["type"] == "integer", trade
