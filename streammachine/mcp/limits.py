"""Bounded results and requests: what one tool call may return and accept, on every transport.

A result goes out twice (the SDK sends the structured content and, for
clients that read only text, the same JSON as a text block, escaped inside a
JSON string), so its cost on the wire is measured as both. The SDK's HTTP
client refuses events over 1 MiB by default; the default budget of 512 KiB
(``STREAMMACHINE_MCP_MAX_RESULT_BYTES``) keeps every result well inside it.

Listing tools fill a page item by item until the budget or the count is
reached and hand back a ``next_cursor``; a single item too big for a page
has its long text values cut (and says which, with their full length).
"""

from __future__ import annotations

import bisect
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, TypeVar

import orjson
from mcp.server.mcpserver.exceptions import ToolError

T = TypeVar("T")

ENVELOPE = 2048
"""Bytes kept aside for a result's own fields (stream name, counts, cursor) around its items."""


def json_bytes(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)


def wire_cost(encoded: bytes) -> int:
    """Bytes ``encoded`` (compact JSON) costs on the wire: itself, plus itself as an escaped JSON string.

    Inside a JSON string only its quotes and backslashes gain an escape (control characters are escaped
    already, and non-ASCII text stays as it is), so counting them is exact.
    """
    return 2 * len(encoded) + encoded.count(b'"') + encoded.count(b"\\") + 2


def cost(value: Any) -> int:
    return wire_cost(json_bytes(value)) + 4  # separators around it, in both copies


def fit(items: Sequence[T], budget: int, cost_of: Callable[[T], int]) -> Tuple[List[T], bool]:
    """The longest prefix of ``items`` whose costs sum to at most ``budget`` (at least one item: pages progress).

    The flag is True when items were left out for lack of room.
    """
    page: List[T] = []
    spent = 0
    for item in items:
        spent += cost_of(item)
        if page and spent > budget:
            return page, True
        page.append(item)
    return page, False


def shrink_fields(fields: Dict[str, str], budget: int) -> Tuple[Dict[str, str], Dict[str, int]]:
    """``fields`` with long values cut until their cost fits ``budget``; also {field: full length} of the cut ones."""
    if cost(fields) <= budget:
        return fields, {}
    cap = max((len(v) for v in fields.values()), default=0)
    while cap > 0:
        cap //= 2
        cut = {k: v if len(v) <= cap else v[:cap] for k, v in fields.items()}
        if cost(cut) <= budget:
            break
    else:
        raise ToolError(
            f"an entry with {len(fields)} fields does not fit in one result even with every value cut "
            "(STREAMMACHINE_MCP_MAX_RESULT_BYTES is too small for it)"
        )
    return cut, {k: len(v) for k, v in fields.items() if len(v) > cap}


class Limits:
    """One server's bounds: result bytes, request bytes, entries per read (STREAMMACHINE_RECORDS)."""

    def __init__(self, max_result_bytes: int, max_request_bytes: int, records: int) -> None:
        self.max_result_bytes = max_result_bytes
        self.max_request_bytes = max_request_bytes
        self.records = records

    @property
    def page_budget(self) -> int:
        """What a page's items may cost, the result's own fields aside."""
        return self.max_result_bytes - ENVELOPE

    def default_count(self, preferred: int) -> int:
        """A tool's default count, never above the configured STREAMMACHINE_RECORDS."""
        return min(preferred, self.records)

    def check_result(self, tool: str, encoded: bytes) -> None:
        """The backstop for results no tool paged: a clear error instead of a reply the client cannot take."""
        size = wire_cost(encoded)
        if size > self.max_result_bytes:
            raise ToolError(
                f"the result is {size} bytes on the wire, over the limit of {self.max_result_bytes} "
                f"(STREAMMACHINE_MCP_MAX_RESULT_BYTES); ask {tool} for less (a smaller count, limit or section)"
            )

    def request_problem(self, tool: str, arguments: Dict[str, Any]) -> Optional[str]:
        """Arguments over the request limit, said with how to split (the same limit over stdio and HTTP)."""
        size = len(json_bytes(arguments))
        if size <= self.max_request_bytes:
            return None
        hint = "send less per call"
        messages = arguments.get("messages")
        if tool == "stream_send_batch" and isinstance(messages, list) and messages:
            per_call = max(1, int(len(messages) * self.max_request_bytes / size * 0.9))
            calls = -(-len(messages) // per_call)
            hint = f"split the {len(messages)} messages into {calls} calls of at most {per_call}"
        return (
            f"the arguments are {size} bytes of JSON, over the limit of {self.max_request_bytes} "
            f"(STREAMMACHINE_MCP_MAX_REQUEST_BYTES, the same over stdio and HTTP); {hint}"
        )


def after(keys: Sequence[str], cursor: Optional[str]) -> List[str]:
    """Sorted ``keys`` strictly after ``cursor`` (a listing's page cursor is the last key it returned)."""
    ordered = sorted(keys)
    if cursor is None:
        return ordered

    return ordered[bisect.bisect_right(ordered, cursor) :]


def key_page(keys: Sequence[str], cursor: Optional[str], limit: int, budget: int) -> Tuple[List[str], Optional[str]]:
    """One page of sorted ``keys`` after ``cursor``: at most ``limit`` and ``budget`` bytes; and the next cursor."""
    rest = after(keys, cursor)
    page, cut = fit(rest[:limit], budget, cost)
    more = cut or len(rest) > len(page)
    return page, (page[-1] if more and page else None)


def pack(rows: Sequence[Dict[str, Any]], budget: int, share: Optional[int] = None) -> Tuple[List[Dict], bool]:
    """Rows (dicts with a ``fields`` dict of str) that fit ``budget``, in order; True when the budget cut them.

    A row over ``share`` (default: half the budget, so a page always moves on) has its long values cut and
    gains ``truncated_fields``; that alone marks the result truncated too.
    """
    share = budget // 2 if share is None else share
    page: List[Dict] = []
    spent = 0
    cut_any = False
    for row in rows:
        row_cost = cost(row)
        if row_cost > share:
            fields, cut = shrink_fields(row["fields"], max(64, share - (row_cost - cost(row["fields"]))))
            row = {**row, "fields": fields, "truncated_fields": cut}
            row_cost = cost(row)
            cut_any = True
        if page and spent + row_cost > budget:
            return page, True
        spent += row_cost
        page.append(row)
    return page, cut_any
