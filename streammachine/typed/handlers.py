"""Typed handlers: ``async def handle(trade: Trade)`` receives a validated ``Trade``, not a Message.

The first positional parameter's annotation decides: a pydantic model, a
msgspec Struct or a dataclass (``list[Model]`` for ``batch=True`` agents)
makes the handler typed; anything else (``Message``, no annotation) leaves
it as it is. A typed handler may take a second positional parameter: it
receives the ``Message`` (``list[Message]`` for batches), for the entry id,
stream, timestamps and raw fields::

    @app.agent("trades")
    async def book(trade: Trade, record: Message):
        log.info("%s at %s", trade.qty, record.timestamp_ms)

The wrapper decodes before the handler runs; an entry that does not fit
raises ``InvalidMessage`` there, which the consumer dead-letters at once.
The handler's return value is passed through.
"""

from __future__ import annotations

import collections.abc
import inspect
import typing
from typing import Any, Callable, NamedTuple, Optional

from streammachine.message import Message
from streammachine.typed.models import codec_for, model_kind

_LISTS = (list, collections.abc.Sequence, collections.abc.Iterable, collections.abc.MutableSequence)
_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


class HandlerModel(NamedTuple):
    """What a typed handler asks for."""

    model: type
    batch: bool  # annotated list[Model]
    with_message: bool  # a second positional parameter receives the Message(s)


def _signature(handler: Callable) -> Optional[inspect.Signature]:
    try:
        return inspect.signature(handler, eval_str=True)
    except (NameError, SyntaxError, TypeError, AttributeError):
        pass  # some annotation does not resolve: look at the first parameter's alone below
    except ValueError:
        return None
    try:
        return inspect.signature(handler)
    except (TypeError, ValueError):
        return None


def _resolve(annotation: Any, handler: Callable) -> Any:
    if not isinstance(annotation, str):
        return annotation
    target = inspect.unwrap(handler)
    namespace = getattr(target, "__globals__", None) or getattr(type(target).__call__, "__globals__", {})
    try:
        return eval(annotation, dict(namespace))  # what eval_str does, for this one annotation
    except Exception:
        return None


def handler_model(handler: Callable) -> Optional[HandlerModel]:
    """The model a handler's first parameter asks for, or None for an untyped handler."""
    signature = _signature(handler)
    if signature is None:
        return None
    params = [p for p in signature.parameters.values() if p.kind in _POSITIONAL]
    if not params or params[0].annotation is inspect.Parameter.empty:
        return None
    annotation = _resolve(params[0].annotation, handler)
    batch = False
    if typing.get_origin(annotation) in _LISTS and typing.get_args(annotation):
        annotation, batch = typing.get_args(annotation)[0], True
    if model_kind(annotation) is None:
        return None
    with_message = len(params) >= 2 and (
        params[1].default is inspect.Parameter.empty or _mentions_message(_resolve(params[1].annotation, handler))
    )
    return HandlerModel(annotation, batch, with_message)


def _mentions_message(annotation: Any) -> bool:
    return annotation is Message or Message in typing.get_args(annotation)


def check_handler(handler: Callable, *, batch: bool, name: str) -> Optional[HandlerModel]:
    """At registration: the handler's model, or a TypeError when its annotation and ``batch`` disagree."""
    found = handler_model(handler)
    if found is None:
        return None
    model = found.model.__qualname__
    if found.batch and not batch:
        raise TypeError(f"agent {name!r}: the handler takes list[{model}], which needs batch=True")
    if batch and not found.batch:
        raise TypeError(f"agent {name!r}: batch agents receive a list per read: annotate list[{model}], not {model}")
    codec_for(found.model)  # a model whose annotations do not resolve fails here, not on the first entry
    return found


def typed_handler(handler: Callable, *, is_async: bool, batch: bool, name: str = "?") -> Callable:
    """``handler`` itself when untyped; else a wrapper of the same kind (sync/async) taking Message(s)."""
    found = check_handler(handler, batch=batch, name=name)
    if found is None:
        return handler
    decode = codec_for(found.model).decode

    def one(message: Message) -> Any:
        return decode(message.data[1], message.topic, message.key)  # type: ignore[index]

    wrapper: Callable
    if batch:

        def convert(messages: list) -> list:
            return [decode(m.data[1], m.topic, m.key) for m in messages]

        if is_async:
            if found.with_message:

                async def wrapper(messages):
                    return await handler(convert(messages), messages)
            else:

                async def wrapper(messages):
                    return await handler(convert(messages))
        elif found.with_message:

            def wrapper(messages):
                return handler(convert(messages), messages)
        else:

            def wrapper(messages):
                return handler(convert(messages))
    elif is_async:
        if found.with_message:

            async def wrapper(message):
                return await handler(one(message), message)
        else:

            async def wrapper(message):
                return await handler(one(message))
    elif found.with_message:

        def wrapper(message):
            return handler(one(message), message)
    else:

        def wrapper(message):
            return handler(one(message))

    setattr(wrapper, "__streammachine_model__", found)  # noqa: B010  (what the wrapper decodes, for introspection)
    wrapper.__qualname__ = getattr(handler, "__qualname__", wrapper.__qualname__)
    return wrapper


def decode(message: Message, model: type) -> Any:
    """One Message as ``model`` (for untyped handlers that want a model for some entries)."""
    return codec_for(model).decode(message.fields, message.topic, message.key)
