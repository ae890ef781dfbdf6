"""How a StreamMachine tool is registered and called: annotations, argument checks, errors phrased for the caller.

Every tool is declared with a title, its behaviour hints (``readOnlyHint``,
``destructiveHint``, ``idempotentHint``; ``openWorldHint`` is always false:
the tools reach only the configured Redis and this process) and one example
call, appended to its description. A call

- names only arguments the tool takes (unknown ones are refused, and the
  input schemas say ``additionalProperties: false``);
- stays within the request limit on every transport;
- fails as a tool error phrased for the caller (which argument, which value,
  what was expected), never a pydantic or Redis dump, with passwords scrubbed;
- returns at most the result limit: its compact JSON text and its structured
  content together.
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
from typing import Any, Callable, Dict, Optional

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import CallToolResult, TextContent, ToolAnnotations
from pydantic import BaseModel, ValidationError
from redis import exceptions as redis_errors

from streammachine.mcp.limits import json_bytes

log = logging.getLogger("streammachine.mcp")

WRITE_TOOLS = frozenset(
    {
        "stream_send",
        "stream_send_batch",
        "stream_trim",
        "stream_group_create",
        "stream_group_destroy",
        "stream_group_reset",
        "stream_group_read",
        "stream_group_ack",
        "stream_dead_letter_replay",
        "stream_dead_letter_purge",
        "storage_write",
        "storage_delete",
        "storage_clear",
        "obj_delete",
    }
)
"""Tools that change Redis: read-only mode does not register them."""


def _short(value: Any, limit: int = 60) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def phrase_validation(error: ValidationError, schema: Dict[str, Any]) -> str:
    """A pydantic ValidationError as one clause per problem: the argument, the value, what was expected."""
    problems = []
    for item in error.errors(include_url=False):
        where = ".".join(str(part) for part in item["loc"]) or "arguments"
        about = schema.get("properties", {}).get(item["loc"][0] if item["loc"] else "", {}).get("description")
        if item["type"] == "missing":
            problems.append(f"{where} is required" + (f" ({about})" if about else ""))
        elif item["loc"] and item["loc"][0] == "confirm":
            problems.append(f"confirm={_short(item['input'])}: only the JSON boolean true confirms")
        else:
            problems.append(f"{where}={_short(item['input'])}: {item['msg']}" + (f" ({about})" if about else ""))
    return "; ".join(problems)


def phrase_failure(exc: BaseException, server_url: str) -> str:
    """What went wrong in a tool body, for the caller: no exception class names, no library internals."""
    if isinstance(exc, (redis_errors.ConnectionError, redis_errors.TimeoutError, ConnectionError, TimeoutError)):
        return f"cannot connect to Redis at {server_url} ({exc}); health_check tells when it is back"
    if isinstance(exc, redis_errors.ResponseError):
        text = str(exc)
        if text.startswith("WRONGTYPE"):
            return "a key named in the call holds another Redis type than this tool works on"
        if text.startswith("NOGROUP"):
            return f"no such consumer group ({text.removeprefix('NOGROUP ')}); stream_groups lists them"
        return f"Redis refused the command: {text}"
    if isinstance(exc, (ValueError, TypeError)):
        return str(exc)
    log.error("an MCP tool failed unexpectedly", exc_info=exc)
    return f"unexpected failure ({type(exc).__name__}); the server log has the details"


def hints(*, read_only: bool = False, destructive: bool = False, idempotent: bool = False) -> Dict[str, bool]:
    return {"read_only": read_only, "destructive": destructive, "idempotent": idempotent}


READ = hints(read_only=True, idempotent=True)
ADD = hints()
OVERWRITE = hints(destructive=True, idempotent=True)


class Registrar:
    """``@tool(title=..., example=..., **hints)`` registers a function as one of the server's tools."""

    def __init__(self, server: MCPServer, state: Any) -> None:
        self.server = server
        self.state = state
        self.arguments: Dict[str, frozenset] = {}

    def __call__(
        self, *, title: str, example: Dict[str, Any], read_only: bool, destructive: bool, idempotent: bool
    ) -> Callable[[Callable], Callable]:
        def register(fn: Callable) -> Callable:
            name = fn.__name__
            if self.state.read_only and name in WRITE_TOOLS:
                return fn
            self.arguments[name] = frozenset(inspect.signature(fn).parameters)
            self.server.add_tool(
                self._guarded(fn),
                name=name,
                title=title,
                description=f"{inspect.cleandoc(fn.__doc__ or '')}\n\nExample: {json.dumps(example)}",
                annotations=ToolAnnotations(
                    title=title,
                    read_only_hint=read_only,
                    destructive_hint=destructive,
                    idempotent_hint=idempotent,
                    open_world_hint=False,
                ),
                structured_output=True,
            )
            return fn

        return register

    def _guarded(self, fn: Callable) -> Callable:
        state = self.state

        @functools.wraps(fn)
        async def guarded(*args: Any, **kwargs: Any) -> Any:
            try:
                result = await fn(*args, **kwargs)
                data = result.model_dump(mode="json") if isinstance(result, BaseModel) else result
                encoded = json_bytes(data)
                state.limits.check_result(fn.__name__, encoded)
            except ToolError as exc:
                raise ToolError(state.scrub(str(exc))) from None
            except Exception as exc:
                raise ToolError(state.scrub(phrase_failure(exc, state.connection.safe_url))) from None
            # compact JSON for the text copy: the SDK's own (indented) rendering nearly doubles a result
            return CallToolResult(content=[TextContent(type="text", text=encoded.decode())], structured_content=data)

        return guarded

    def unknown_arguments(self, name: str, arguments: Dict[str, Any]) -> Optional[str]:
        """Arguments the tool does not take, said (a typo would otherwise silently fall back to a default)."""
        known = self.arguments.get(name)
        unknown = sorted(set(arguments) - known) if known is not None else ()
        if not unknown:
            return None
        return (
            f"unknown argument(s) {', '.join(map(repr, unknown))}; {name} takes "
            f"{', '.join(sorted(known)) if known else 'no arguments'}"
        )


class StreamMachineServer(MCPServer):
    """``MCPServer`` whose calls are checked before the SDK validates them, and whose schemas forbid extras."""

    registrar: Optional[Registrar] = None
    state: Any = None
    _schemas: Optional[Dict[str, Dict[str, Any]]] = None

    async def list_tools(self):
        tools = await super().list_tools()
        for listed in tools:
            listed.input_schema.setdefault("additionalProperties", False)
        return tools

    async def call_tool(self, name: str, arguments: Dict[str, Any], context: Any = None) -> Any:
        if self.registrar is not None:
            problem = self.registrar.unknown_arguments(name, arguments) or self.state.limits.request_problem(
                name, arguments
            )
            if problem:
                raise ToolError(f"Error executing tool {name}: {problem}")
        try:
            return await super().call_tool(name, arguments, context)
        except ToolError as exc:
            if isinstance(exc.__cause__, ValidationError):
                if self._schemas is None:
                    self._schemas = {listed.name: listed.input_schema for listed in await self.list_tools()}
                phrased = phrase_validation(exc.__cause__, self._schemas.get(name, {}))
                raise ToolError(f"Error executing tool {name}: {phrased}") from exc.__cause__
            raise
