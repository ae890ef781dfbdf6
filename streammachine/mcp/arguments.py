"""Argument types and checks the tools share: names, confirmations, stream ids, millisecond timestamps."""

from __future__ import annotations

import re
import time
from typing import Annotated, Any, Optional

from mcp.server.mcpserver.exceptions import ToolError
from pydantic import Field

StreamName = Annotated[str, Field(min_length=1, max_length=1024, description="Redis stream key, e.g. 'events'")]
GroupName = Annotated[str, Field(min_length=1, max_length=256, description="consumer group name")]
Confirm = Annotated[
    bool,
    Field(strict=True, description='must be the JSON boolean true to go ahead ("true", 1 or "yes" do not count)'),
]
Cursor = Annotated[
    Optional[str], Field(description="the next_cursor of the previous page, to continue after it (omit: first page)")
]

# Epoch milliseconds in [1e9, 1e11) are 1970-01-12 .. 1973-03-03, an era no live data comes from; the same
# numbers in seconds are 2001 .. 5138. Such a value is taken for a seconds timestamp and refused.
_SECONDS_LOW, _SECONDS_HIGH = 10**9, 10**11
_ID = re.compile(r"(\(?)(\d{1,20})(?:-(\d{1,20}))?")


def looks_like_seconds(value: int) -> bool:
    return _SECONDS_LOW <= value < _SECONDS_HIGH


def seconds_hint(what: str, value: Any, ms: int) -> str:
    day = time.strftime("%Y-%m-%d", time.gmtime(ms))
    return (
        f"{what}={value!r} looks like a time in seconds ({day}); it is taken as epoch milliseconds here: "
        f"pass {ms * 1000}"
    )


def check_ms(what: str, value: Optional[int]) -> Optional[int]:
    """``value`` if it is a plausible epoch-ms timestamp (or None); a ToolError when it looks like seconds."""
    if value is not None and looks_like_seconds(value):
        raise ToolError(seconds_hint(what, value, value))
    return value


def stream_id(what: str, value: str, *, special: tuple = ("-", "+"), exclusive: bool = True) -> str:
    """``value`` if Redis takes it as a range bound or entry id; a ToolError saying what is expected otherwise."""
    if value in special:
        return value
    match = _ID.fullmatch(value)
    if match is None or (match.group(1) and not exclusive):
        shapes = " or ".join(repr(s) for s in special)
        raise ToolError(
            f"{what}={value!r}: expected {shapes + ', ' if special else ''}a time in ms (1700000000000) or an "
            f"entry id ('1700000000000-0'){', with a leading ( to exclude it' if exclusive else ''}"
        )
    if looks_like_seconds(int(match.group(2))):
        raise ToolError(seconds_hint(what, value, int(match.group(2))))
    return value
