"""A cell body as a handler: cell-like names, a private ``message``, await allowed."""

from __future__ import annotations

import asyncio
import inspect
import traceback

import pytest

from streammachine.cells import assigned_names, handler_from_cell


def test_names_the_body_assigns_are_notebook_globals_and_message_stays_local():
    namespace = {"__name__": "__main__", "count": 0, "seen": []}
    handler = handler_from_cell(
        "import math\n"
        "count += 1\n"
        "seen.append(message)\n"
        "squares = [x * x for x in range(3)]\n"
        "if (size := len(seen)) > 1:\n"
        "    last = size\n"
        "def helper():\n"
        "    inner = 1\n",
        ["message"],
        "cell_agent:t",
        namespace,
    )
    handler("a")
    handler("b")
    assert (namespace["count"], namespace["seen"], namespace["last"]) == (2, ["a", "b"], 2)
    assert namespace["squares"] == [0, 1, 4] and "math" in namespace and "helper" in namespace
    assert not {"message", "x", "inner"} & namespace.keys()
    assert handler.__name__ == "cell_agent:t" and handler.__module__ == "__main__"
    assert not inspect.iscoroutinefunction(handler)  # no await: called without a coroutine


async def test_a_body_that_awaits_becomes_async():
    namespace = {"asyncio": asyncio, "out": []}
    handler = handler_from_cell("await asyncio.sleep(0)\nout.append(messages[0])", ["messages"], "b", namespace)
    assert inspect.iscoroutinefunction(handler)
    await handler(["first"])
    assert namespace["out"] == ["first"]
    # an await inside a nested def does not make the handler itself async
    assert not inspect.iscoroutinefunction(handler_from_cell("async def f():\n    await g()", [], "t", {}))


def test_tracebacks_point_at_the_cells_own_lines():
    handler = handler_from_cell("x = 1\ny = x / 0\n", [], "cell_timer:1s", {}, filename="<my cell>")
    with pytest.raises(ZeroDivisionError) as caught:
        handler()
    frame = traceback.extract_tb(caught.value.__traceback__)[-1]
    assert (frame.filename, frame.lineno, frame.name) == ("<my cell>", 2, "cell_timer_1s")


def test_declaring_the_message_global_is_refused():
    with pytest.raises(SyntaxError, match="\\['message'\\] is the handler's argument"):
        handler_from_cell("global message\nmessage = 1", ["message"], "a", {})


def test_assigned_names_skip_nested_scopes():
    import ast

    body = ast.parse(
        "a = 1\nfor b in c: pass\nclass K:\n    d = 1\nlambda e: e\n{f: 1 for f in g}\n"
        "try:\n    pass\nexcept E as h:\n    pass\nwith w as (i, j): pass"
    ).body
    assert assigned_names(body) == {"a", "b", "K", "h", "i", "j"}


def test_threaded_flag_registers_a_threaded_agent():
    from streammachine import App
    from streammachine.cells import MagicArgumentError, cell_registration

    app = App("cells")
    cell_registration(app, "agent orders --threaded --name blocking", "done = message", {}).register()
    assert app.agents["blocking"].threaded
    with pytest.raises(ValueError, match="threaded=True is for sync"):
        cell_registration(app, "agent orders --threaded", "await asyncio.sleep(0)", {}).register()
    with pytest.raises(MagicArgumentError, match="--concurrency 0"):
        cell_registration(app, "agent orders --concurrency 0", "pass", {})
