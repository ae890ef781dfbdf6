"""Message: one stream entry as an agent receives it."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, Optional, Tuple, cast

import orjson

from streammachine._speedups import decode_dict_bytes_to_utf8


@dataclass(slots=True, eq=False)
class Message:
    """A received stream entry.

    ``data`` is the raw ``(id, fields)`` pair as Redis returned it (bytes);
    ``message`` is the same fields decoded to ``str -> str`` (computed once).
    ``sent`` is the ``sent`` field when the producer included one (epoch
    seconds), else the time Redis accepted the entry (from its id): for a
    record sent with ``app.send`` that is its send time. None only when
    neither is known.
    """

    topic: Optional[str] = None
    key: Optional[str] = None
    sent: Optional[float] = None
    received: Optional[float] = None
    consumer_id: Optional[str] = None
    data: Optional[Tuple[str, Dict]] = None
    _decoded: Optional[Dict[str, str]] = field(default=None, repr=False)

    @property
    def id(self) -> Optional[str]:
        return self.key

    @property
    def message(self) -> Dict[str, str]:
        decoded = self._decoded
        if decoded is None:
            decoded = self._decoded = decode_dict_bytes_to_utf8(self.data[1]) if self.data else {}
        return decoded

    @property
    def fields(self) -> Dict:
        """The raw fields (bytes keys and values), without decoding."""
        return self.data[1] if self.data else {}

    def json(self, name: str) -> Any:
        """A field that was sent as a dict or list, parsed back."""
        raw = self.fields.get(name.encode(), self.fields.get(name))
        if raw is None:
            raise KeyError(f"message {self.key} on {self.topic!r} has no field {name!r}")
        return orjson.loads(raw)

    @property
    def timestamp_ms(self) -> Optional[int]:
        """When Redis accepted the entry (the ms part of its id)."""
        if not self.key:
            return None
        return int(self.key.split("-", 1)[0])

    @property
    def latency_ms(self) -> Optional[float]:
        sent = self.sent
        if self.received is None or not sent:
            return None
        return (self.received - sent) * 1000.0

    @property
    def timer(self) -> str:
        """``"topic: task X.XX ms"``: from sending to receipt."""
        latency = self.latency_ms
        return f"{self.topic}: task {latency if latency is not None else 0.0:.2f} ms"


# ``sent`` reads its slot, else the id's time. It is a property over the slot the dataclass made, so the agents'
# hot path (received_messages) pays nothing for it: it leaves the slot unset unless a sent field came, and the
# id is only parsed when someone reads ``sent``.
_SENT_SLOT = Message.__dict__["sent"]


def _sent(message: Message) -> Optional[float]:
    try:
        value = _SENT_SLOT.__get__(message, Message)
    except AttributeError:  # never set: built by received_messages from an entry without a sent field
        value = None
    if value is None and message.key:
        try:
            return int(message.key.partition("-")[0]) / 1000.0
        except ValueError:  # not a stream id (a hand-built Message)
            return None
    return value


Message.sent = property(_sent, _SENT_SLOT.__set__, doc="When the record was sent (epoch seconds).")  # type: ignore[misc,assignment]


def _sent_field(fields: dict) -> Optional[float]:
    raw = fields.get(b"sent")
    if raw is None:
        raw = fields.get("sent")
        if raw is None:
            return None
    return _as_float(raw)


def _as_float(raw) -> Optional[float]:
    try:
        return float(raw)
    except (TypeError, ValueError):
        return None


_new = object.__new__


def received_messages(topic: str, consumer_id: Optional[str], received: float, entries) -> Iterator[Optional[Message]]:
    """One Message per ``(id, fields)`` entry of a read, in order; None for an entry deleted while pending.

    The hot path of every agent, lazily: each Message is built when the loop
    reaches its entry. It skips the dataclass ``__init__`` (``object.__new__``
    and slot stores take half the time), so it sets every field itself: keep
    it in step with the dataclass (tests compare the two). Field names come
    decoded like the id (one reply), so ``sent`` is looked up once, as bytes
    or as str.
    """
    new, message_class, as_float, set_sent = _new, Message, _as_float, _SENT_SLOT.__set__
    for entry_id, fields in entries:
        if fields is None:
            yield None
            continue
        if type(entry_id) is bytes:
            key = entry_id.decode()
            raw = fields.get(b"sent")
        else:
            key = entry_id
            raw = fields.get("sent")
        message = new(message_class)
        message.topic = topic
        message.key = key
        if raw is not None:  # else the slot stays unset: ``sent`` is then the id's time, parsed when read
            set_sent(message, as_float(raw))
        message.received = received
        message.consumer_id = consumer_id
        message.data = (key, fields)
        message._decoded = None
        yield message


def message_from_entry(
    topic: str, entry_id, fields: dict, consumer_id: Optional[str], received: Optional[float] = None
) -> Message:
    """One Message from one ``(id, fields)`` entry (the agents' path, ``received_messages``, for a single entry)."""
    entry = (entry_id, {} if fields is None else fields)
    message = next(received_messages(topic, consumer_id, time.time() if received is None else received, [entry]))
    return cast(Message, message)  # None only for an entry without fields, and this one has some
