"""The ``obj_*`` tools: RedisObjectStorage's signed pickles, on the server's connection and key.

``obj_get`` only ever unpickles objects whose HMAC signature checks out
with this server's key (STREAMMACHINE_SECRET_KEY, else the per-user key
file): anything unsigned or tampered with is refused, never unpickled.
"""

from __future__ import annotations

from typing import Annotated, Any, Callable

import pydantic_core
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import Field

from streammachine.mcp.models import ObjDeleted, ObjKeys, ObjValue
from streammachine.state.objstore import RedisObjectStorage, SignatureError

Prefix = Annotated[str, Field(description="the storage's key prefix (RedisObjectStorage(prefix=...))")]
REPR_LIMIT = 2000


def _json_form(obj: Any) -> Any:
    try:
        return pydantic_core.to_jsonable_python(obj)
    except (pydantic_core.PydanticSerializationError, TypeError, ValueError):
        return None


def register(tool: Callable, state: Any) -> None:
    def storage(prefix: str) -> RedisObjectStorage:
        return RedisObjectStorage(connection=state.connection, prefix=prefix)

    @tool
    async def obj_get(key: Annotated[str, Field(min_length=1)], prefix: Prefix = "obj:") -> ObjValue:
        """Retrieve a pickled object from Redis (signed objects only: unsigned or tampered data is refused)."""
        missing = object()
        try:
            obj = await storage(prefix).retrieve_with_pickle(key, default=missing)
        except SignatureError as exc:
            raise ToolError(f"obj_get: {exc}") from None
        if obj is missing:
            raise ToolError(f"obj_get: no object stored at {key!r} (prefix {prefix!r}); see obj_list")
        text = repr(obj)
        return ObjValue(
            key=key,
            type=f"{type(obj).__module__}.{type(obj).__qualname__}",
            value=_json_form(obj),
            repr=text if len(text) <= REPR_LIMIT else text[:REPR_LIMIT] + "...",
        )

    @tool
    async def obj_list(
        pattern: Annotated[str, Field(description="glob pattern below the prefix")] = "*",
        prefix: Prefix = "obj:",
    ) -> ObjKeys:
        """List object storage keys matching a pattern (SCAN, not KEYS)."""
        keys = await storage(prefix).list_keys(pattern)
        return ObjKeys(pattern=pattern, count=len(keys), keys=keys)

    @tool
    async def obj_delete(
        pattern: Annotated[str, Field(min_length=1, description="glob pattern below the prefix, e.g. 'model:*'")],
        confirm: Annotated[bool, Field(description="must be true: this deletes every matching object")] = False,
        prefix: Prefix = "obj:",
    ) -> ObjDeleted:
        """Delete objects by pattern (requires confirm: true)."""
        if confirm is not True:
            matching = await storage(prefix).list_keys(pattern)
            raise ToolError(
                f"obj_delete would delete {len(matching)} object(s) matching {pattern!r}; call it "
                "again with confirm: true to go ahead"
            )
        return ObjDeleted(pattern=pattern, deleted=await storage(prefix).delete_keys(pattern))
