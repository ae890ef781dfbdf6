"""The ``obj_*`` tools: RedisObjectStorage's signed pickles (placeholder until objstore lands)."""
from __future__ import annotations

from typing import Any, Callable


def register(tool: Callable, state: Any) -> None:
    pass
