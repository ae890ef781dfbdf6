"""Which Redis keys each family of tools may touch.

The MCP server shares one Redis with apps, so a caller (an LLM, a prompt it
read) must not reach beyond what a tool is for:

- stream tools: stream keys only, never the storage hash nor anything under
  the object prefix, and never a key that already holds another type;
- storage tools: fields of the one storage hash;
- object tools: string keys under the configured object prefix
  (``STREAMMACHINE_MCP_OBJECT_PREFIX``); a caller may narrow it, never widen it;
- OHLC tools: aggregators in this process (no Redis key at all).

Glob characters in a prefix are escaped before it is used in a SCAN match,
so a prefix is always a literal start of every key a scan can return.
"""

from __future__ import annotations

from typing import Optional

from mcp.server.mcpserver.exceptions import ToolError


def escape_glob(text: str) -> str:
    """``text`` as a literal inside a Redis glob pattern."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


class Namespaces:
    """The key rules of one server: its storage hash and object prefix."""

    def __init__(self, storage_key: str, object_prefix: str) -> None:
        if not object_prefix:
            raise ValueError("the object prefix must not be empty: it confines the object tools")
        self.storage_key = storage_key
        self.object_prefix = object_prefix

    def stream(self, name: str, what: str = "stream") -> str:
        """``name`` if a stream tool may use it; a ToolError naming the namespace it belongs to otherwise."""
        if name == self.storage_key:
            raise ToolError(f"{what}={name!r} is the shared storage hash, not a stream: use the storage_* tools")
        if name.startswith(self.object_prefix):
            raise ToolError(
                f"{what}={name!r} is in the object namespace ({self.object_prefix!r}...): stream tools do not "
                "touch it; pick a stream name outside it"
            )
        return name

    def object_prefix_for(self, prefix: Optional[str]) -> str:
        """The prefix an object tool works under: the configured one, or a caller's narrower one inside it."""
        if prefix is None or prefix == self.object_prefix:
            return self.object_prefix
        if not prefix.startswith(self.object_prefix) or any(c in prefix for c in "*?[]\\"):
            raise ToolError(
                f"prefix={prefix!r}: object tools work only under {self.object_prefix!r}; a prefix may narrow "
                f"it (e.g. {self.object_prefix + 'models:'!r}) and holds no glob characters"
            )
        return prefix

    def object_match(self, prefix: str, pattern: str) -> str:
        """The SCAN pattern for ``pattern`` below ``prefix`` (already confined): every match starts with ``prefix``."""
        return escape_glob(prefix) + pattern
