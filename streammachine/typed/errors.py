"""What a typed decode reports when an entry does not fit its model."""

from __future__ import annotations

from typing import Any, NamedTuple, Optional, Sequence


class Missing:
    """The value of a required field the entry does not have."""

    def __repr__(self) -> str:
        return "<missing>"


MISSING = Missing()


class FieldError(NamedTuple):
    """One field that does not fit: its dotted path, the value it had (or MISSING), what was expected."""

    field: str
    value: Any
    expected: str

    def __str__(self) -> str:
        if self.value is MISSING:
            return f"field {self.field!r}: missing ({self.expected})"
        return f"field {self.field!r}: value {_short(self.value)}: {self.expected}"


def _short(value: Any, limit: int = 120) -> str:
    if isinstance(value, (bytes, bytearray)):
        try:
            value = bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            pass
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class InvalidMessage(ValueError):
    """An entry that cannot become the handler's model. It cannot succeed on a retry.

    The consumer dead-letters it at once (no retries), with this error's text
    (every field, its value, what was expected) in ``_dlq_error``; only
    ``on_error="skip"`` skips it instead. A handler may raise it too, for an
    entry it finds invalid.
    """

    def __init__(
        self,
        model: Any,
        errors: Sequence[FieldError],
        stream: Optional[str] = None,
        entry_id: Optional[str] = None,
    ) -> None:
        self.model = model
        self.errors = list(errors)
        self.stream = stream
        self.entry_id = entry_id
        super().__init__(self._text())

    def _text(self) -> str:
        name = getattr(self.model, "__qualname__", None) or str(self.model)
        where = ""
        if self.entry_id is not None:
            where = f"entry {self.entry_id} "
        if self.stream is not None:
            where += f"of stream {self.stream!r} "
        details = "; ".join(str(e) for e in self.errors) or "no details"
        return f"{where}is not a valid {name}: {details}"

    def located(self, stream: Optional[str], entry_id: Optional[str]) -> InvalidMessage:
        """The same error, naming the stream and entry it came from."""
        return InvalidMessage(self.model, self.errors, stream, entry_id)
