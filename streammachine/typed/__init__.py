"""Typed messages: handlers that take a pydantic model, a msgspec Struct or a dataclass.

::

    class Trade(pydantic.BaseModel):
        symbol: str
        qty: int
        meta: dict = {}

    @app.agent("trades")
    async def book(trade: Trade, record: Message):   # record: optional, the entry's metadata
        ...

    await app.send("trades", Trade(symbol="AAPL", qty=2))

An entry that does not fit the model raises ``InvalidMessage`` before the
handler runs and is dead-lettered at once, its error naming each field, the
value and what was expected. pydantic and msgspec are optional
(``pip install 'streammachine[typed]'``); dataclasses need nothing.
"""

from streammachine.typed.errors import MISSING, FieldError, InvalidMessage
from streammachine.typed.handlers import HandlerModel, decode, handler_model, typed_handler
from streammachine.typed.models import ModelCodec, as_record, codec_for, json_schema, model_kind

__all__ = [
    "MISSING",
    "FieldError",
    "HandlerModel",
    "InvalidMessage",
    "ModelCodec",
    "as_record",
    "codec_for",
    "decode",
    "handler_model",
    "json_schema",
    "model_kind",
    "typed_handler",
]
