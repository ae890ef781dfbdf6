"""Fuzzing the MCP tools' inputs through a real client session: any arguments give a result or a tool error
(never a dead session), the server keeps answering afterwards, and the Redis password never shows."""

from __future__ import annotations

import asyncio
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("mcp")
from mcp import Client

from streammachine.mcp import build_server

json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**70), 2**70),
        st.floats(allow_nan=False),
        st.text(max_size=12),
        st.sampled_from(["", "*", "$", "0", "-", "+", "0-0", "{x}", "AAPL", "60000"]),
    ),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)),
    max_leaves=8,
)


async def _tool_names(url: str) -> dict:
    server = build_server(redis_url=url)
    try:
        async with Client(server) as client:
            return {t.name: t.input_schema for t in (await client.list_tools()).tools}
    finally:
        await server.state.close()


@pytest.fixture(scope="module")
def tools(redis_server):
    return asyncio.run(_tool_names(redis_server.url))


async def _scenario(url: str, calls: list) -> list:
    server = build_server(redis_url=url)
    transcript = []
    try:
        async with Client(server) as client:
            for name, arguments in calls:
                result = await client.call_tool(name, arguments)
                text = " ".join(getattr(block, "text", "") for block in result.content)
                transcript.append(
                    (name, arguments, result.is_error, text + json.dumps(result.structured_content, default=str))
                )
            ping = await client.call_tool("redis_ping", {})
            assert not ping.is_error, "the server stopped answering after fuzzed calls"
            for uri in ("streammachine://config", "streammachine://status"):
                contents = (await client.read_resource(uri)).contents
                transcript.append((uri, None, False, " ".join(getattr(c, "text", "") for c in contents)))
    finally:
        await server.state.close()
    return transcript


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(data=st.data())
def test_mcp_tools_survive_any_arguments(redis_url, redis_server, tools, data):
    calls = []
    for _ in range(data.draw(st.integers(1, 4))):
        name = data.draw(st.sampled_from(sorted(tools)))
        known = sorted(tools[name].get("properties", {}))
        keys = data.draw(
            st.lists(
                st.one_of(st.sampled_from(known), st.text(max_size=5)) if known else st.text(max_size=5),
                max_size=4,
                unique=True,
            )
        )
        calls.append((name, {k: data.draw(json_values) for k in keys}))
    transcript = asyncio.run(_scenario(redis_url, calls))
    for name, arguments, is_error, text in transcript:
        assert redis_server.password not in text, f"{name}{arguments} leaked the password: {text[:300]}"
        if is_error:
            assert text.strip(), f"{name}{arguments}: an empty tool error says nothing"
            for leak in ("errors.pydantic.dev", "validation error for", "Traceback", "input_type="):
                assert leak not in text, f"{name}{arguments}: the error shows library internals: {text[:300]}"


def test_unknown_tool_is_an_error_not_a_crash(redis_url):
    transcript = asyncio.run(_scenario(redis_url, [("no_such_tool", {"x": 1})]))
    assert transcript[0][2] is True
