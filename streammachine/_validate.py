"""The one numeric argument check: a finite number (an int where asked) within bounds, never a bool.

Every constructor and option that takes a count, a size or a duration
checks it here, so a bad value always fails the same way, at once, with a
message naming the argument, the value and what was expected::

    concurrency=0: expected an int >= 1
    ttl='10': expected None or seconds > 0

``True`` is an int to Python but never a count or a duration to a user.
numpy integers and floats count as numbers. The error is ``ValueError`` (or
the caller's subclass of it, such as ``ConfigError``) for a value of the
wrong type as for one out of range, so callers catch one exception.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Optional, Type


def _number(value: Any, integer: bool) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, numbers.Integral):
        return True
    return not integer and isinstance(value, numbers.Real) and math.isfinite(value)


def check_number(
    name: str,
    value: Any,
    *,
    integer: bool = False,
    minimum: float = 0,
    inclusive: bool = False,
    maximum: Optional[float] = None,
    optional: bool = False,
    expected: Optional[str] = None,
    error: Type[ValueError] = ValueError,
) -> Any:
    """``value`` (a numpy integer as int) if it is a number above ``minimum`` (or equal, ``inclusive``), at most
    ``maximum``; None passes when ``optional``. Otherwise ``error("name=value: expected ...")``.

    ``expected`` words the bound for the caller's unit ("seconds > 0"); the default says it plainly.
    """
    if value is None and optional:
        return None
    if _number(value, integer) and (value >= minimum if inclusive else value > minimum):
        if maximum is None or value <= maximum:
            return int(value) if integer else value
    if expected is None:
        kind = "an int" if integer else "a number"
        low = f">= {minimum:g}" if inclusive else f"> {minimum:g}"
        if integer and not inclusive and minimum == int(minimum):
            low = f">= {int(minimum) + 1}"  # counts read better as ">= 1" than "> 0"
        expected = f"{kind} {low}" + (f" and <= {maximum:g}" if maximum is not None else "")
    if optional:
        expected = f"None or {expected}"
    text = repr(value)
    if len(text) > 80:
        text = text[:77] + "..."
    raise error(f"{name}={text}: expected {expected}")


def check_positive(name: str, value: Any, **options: Any) -> Any:
    """``check_number`` for a value > 0 (an int >= 1 with ``integer=True``)."""
    return check_number(name, value, **options)


def check_non_negative(name: str, value: Any, **options: Any) -> Any:
    """``check_number`` for a value >= 0."""
    return check_number(name, value, inclusive=True, **options)
