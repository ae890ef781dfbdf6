"""The ``obj_*`` tools: RedisObjectStorage's signed pickles, confined to the object namespace.

Every object tool works under the configured prefix
(``STREAMMACHINE_MCP_OBJECT_PREFIX``, default ``obj:``); a caller's ``prefix``
may narrow it (``obj:models:``) but never widen it, and only string keys
(what RedisObjectStorage writes) are listed or deleted, so a stream or hash
that happens to sit under the prefix is never touched.

``obj_get`` only ever unpickles objects whose HMAC signature checks out
with this server's key (STREAMMACHINE_SECRET_KEY, else the per-user key
file): anything unsigned or tampered with is refused, never unpickled.
"""

from __future__ import annotations

from typing import Annotated, Any, List, Optional

import pydantic_core
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import Field
from redis.exceptions import ResponseError

from streammachine.mcp.arguments import Confirm, Cursor
from streammachine.mcp.limits import cost, key_page
from streammachine.mcp.models import ObjDeleted, ObjKeys, ObjValue
from streammachine.mcp.streams import text
from streammachine.mcp.tooling import OVERWRITE, READ
from streammachine.state.objstore import RedisObjectStorage, SignatureError

Prefix = Annotated[
    Optional[str],
    Field(description="narrow the object namespace, e.g. 'obj:models:' (omitted: the configured prefix, 'obj:')"),
]
Pattern = Annotated[str, Field(max_length=1024, description="glob pattern below the prefix, e.g. 'model:*'")]
REPR_LIMIT = 2000
DELETE_CHUNK = 500


def _json_form(obj: Any) -> Any:
    try:
        return pydantic_core.to_jsonable_python(obj)
    except (pydantic_core.PydanticSerializationError, TypeError, ValueError):
        return None


def register(tool, state) -> None:
    ns, limits = state.namespaces, state.limits

    async def object_keys(prefix: str, pattern: str) -> List[bytes]:
        client = await state.client()
        found = set()
        async for raw in client.scan_iter(match=ns.object_match(prefix, pattern), count=1000, _type="string"):
            found.add(raw)
        return sorted(found)

    @tool(title="Get an object", example={"key": "model:latest"}, **READ)
    async def obj_get(key: Annotated[str, Field(min_length=1, max_length=1024)], prefix: Prefix = None) -> ObjValue:
        """Retrieve one signed, pickled object (RedisObjectStorage) as JSON and repr.

        Only objects signed with this server's key are unpickled; unsigned or tampered data is refused.
        """
        prefix = ns.object_prefix_for(prefix)
        missing = object()
        try:
            obj = await RedisObjectStorage(connection=state.connection, prefix=prefix).retrieve_with_pickle(
                key, default=missing
            )
        except SignatureError as exc:
            raise ToolError(f"obj_get: {exc}") from None
        except ResponseError as exc:
            if not str(exc).startswith("WRONGTYPE"):
                raise
            kind = text(await (await state.client()).type(prefix + key))
            raise ToolError(f"obj_get: {prefix + key!r} is a Redis {kind}, not a stored object") from None
        if obj is missing:
            raise ToolError(f"obj_get: no object stored at {key!r} (prefix {prefix!r}); see obj_list")
        shown = repr(obj)
        value = _json_form(obj)
        too_big = cost(value) > limits.page_budget // 2
        return ObjValue(
            key=key,
            type=f"{type(obj).__module__}.{type(obj).__qualname__}",
            value=None if too_big else value,
            repr=shown if len(shown) <= REPR_LIMIT else shown[:REPR_LIMIT] + "...",
            truncated=too_big,
        )

    @tool(title="List objects", example={"pattern": "model:*"}, **READ)
    async def obj_list(
        pattern: Pattern = "*",
        prefix: Prefix = None,
        limit: Annotated[int, Field(ge=1, le=100000, description="keys per page (1..100000)")] = 1000,
        cursor: Cursor = None,
    ) -> ObjKeys:
        """List stored objects' keys (below the prefix) matching a glob pattern, sorted; SCAN, never KEYS.

        Paged: `next_cursor` continues.
        """
        prefix = ns.object_prefix_for(prefix)
        names = [text(raw)[len(prefix) :] for raw in await object_keys(prefix, pattern)]
        page, next_cursor = key_page(names, cursor, limit, limits.page_budget)
        return ObjKeys(
            prefix=prefix,
            pattern=pattern,
            count=len(page),
            keys=page,
            next_cursor=next_cursor,
            truncated=bool(next_cursor) and len(page) < limit,
        )

    @tool(title="Delete objects", example={"pattern": "model:old-*", "confirm": True}, **OVERWRITE)
    async def obj_delete(
        pattern: Annotated[str, Field(min_length=1, max_length=1024, description="glob pattern below the prefix")],
        confirm: Confirm = False,
        prefix: Prefix = None,
    ) -> ObjDeleted:
        """Delete the stored objects (below the prefix) matching a glob pattern. Needs confirm: true.

        Without it, says how many would go. Only object keys are deleted: never streams, hashes or anything
        outside the object prefix.
        """
        prefix = ns.object_prefix_for(prefix)
        keys = await object_keys(prefix, pattern)
        if confirm is not True:
            raise ToolError(
                f"obj_delete would delete {len(keys)} object(s) matching {pattern!r} under {prefix!r}; call it "
                "again with confirm: true to go ahead"
            )
        client = await state.client()
        deleted = 0
        for start in range(0, len(keys), DELETE_CHUNK):
            chunk = keys[start : start + DELETE_CHUNK]
            if state.connection.is_cluster:  # keys of one call must share a slot there
                deleted += sum([await client.unlink(k) for k in chunk])
            else:
                deleted += await client.unlink(*chunk)
        return ObjDeleted(prefix=prefix, pattern=pattern, deleted=deleted)
