"""Turning a cell body into a handler function (for ``%%streammachine agent/timer``).

The body becomes the body of a function whose parameters (``message``, or
``messages`` for batch agents) are its only locals: every other name it
assigns is declared ``global``, so the body behaves like a cell (``count +=
1`` updates the notebook's ``count``) while concurrent calls never share
their ``message``. A body that awaits becomes an ``async def``; one that does
not stays a plain function, which the consumer calls without a coroutine.
Line numbers are the cell's own, so tracebacks point at the cell.
"""
from __future__ import annotations

import ast
import re
from typing import Callable, Iterable, Iterator, Sequence, Set

_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)
_COMPREHENSIONS = (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)


def _same_scope_nodes(nodes: Iterable[ast.AST]) -> Iterator[ast.AST]:
    """Every node that runs in the function's own scope (nested defs, lambdas, classes excluded)."""
    stack = list(nodes)
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, _SCOPES):
            # a def's decorators and defaults run in the outer scope; its body does not
            stack.extend(getattr(node, "decorator_list", []))
            args = getattr(node, "args", None)
            if args is not None:
                stack.extend(args.defaults + [d for d in args.kw_defaults if d is not None])
            continue
        stack.extend(ast.iter_child_nodes(node))


def _is_async(body: Sequence[ast.stmt]) -> bool:
    for node in _same_scope_nodes(body):
        if isinstance(node, (ast.Await, ast.AsyncFor, ast.AsyncWith)):
            return True
        if isinstance(node, ast.comprehension) and node.is_async:
            return True
    return False


def assigned_names(body: Sequence[ast.stmt]) -> Set[str]:
    """Names the body binds in its own scope (what a cell would bind as globals)."""
    names: Set[str] = set()
    comprehension_targets: Set[int] = set()
    for node in _same_scope_nodes(body):
        if isinstance(node, _COMPREHENSIONS):
            # comprehension variables are local to the comprehension, not to us
            for generator in node.generators:
                comprehension_targets.update(id(n) for n in ast.walk(generator.target))
        if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            if id(node) not in comprehension_targets:
                names.add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                if alias.name != "*":
                    names.add(alias.asname or alias.name.split(".")[0])
        elif isinstance(node, ast.ExceptHandler) and node.name:
            names.add(node.name)
        elif isinstance(node, (ast.MatchAs, ast.MatchStar)) and node.name:
            names.add(node.name)
        elif isinstance(node, ast.MatchMapping) and node.rest:
            names.add(node.rest)
    return names


def handler_from_cell(source: str, params: Sequence[str], name: str, namespace: dict,
                      filename: str = "<cell>") -> Callable:
    """Compile ``source`` as the body of ``def <name>(*params)`` with ``namespace`` as its globals."""
    body = ast.parse(source, filename).body or [ast.Pass()]
    for node in _same_scope_nodes(body):
        if isinstance(node, (ast.Global, ast.Nonlocal)):
            clash = set(node.names) & set(params)
            if clash:
                raise SyntaxError(f"{sorted(clash)} is the handler's argument and cannot be declared global here")
    keyword = "async def" if _is_async(body) else "def"
    identifier = re.sub(r"\W|^(?=\d)", "_", name) or "_cell_handler"  # shown in tracebacks
    module = ast.parse(f"{keyword} {identifier}({', '.join(params)}):\n    pass", filename)
    function = module.body[0]
    shared = sorted(assigned_names(body) - set(params))
    function.body = ([ast.Global(names=shared)] if shared else []) + list(body)
    ast.fix_missing_locations(module)
    scope: dict = {}
    exec(compile(module, filename, "exec"), namespace, scope)
    handler = scope[identifier]
    handler.__name__ = handler.__qualname__ = name
    handler.__module__ = namespace.get("__name__", "__main__")
    return handler
