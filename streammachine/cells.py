"""``%%streammachine agent|timer ...`` cells: parse the line, compile the body into a handler, register it.

No IPython here: the magic and the headless notebook runner register cells the same way,
and the runner must work where IPython is not installed.

The body becomes the body of a function whose parameters (``message``, or
``messages`` for batch agents) are its only locals: every other name it
assigns is declared ``global``, so the body behaves like a cell (``count +=
1`` updates the notebook's ``count``) while concurrent calls never share
their ``message``. A body that awaits becomes an ``async def``; one that does
not stays a plain function, which the consumer calls without a coroutine.
Line numbers are the cell's own, so tracebacks point at the cell.
"""

from __future__ import annotations

import argparse
import ast
import re
import shlex
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Sequence, Set, Union, cast

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


def handler_from_cell(
    source: str, params: Sequence[str], name: str, namespace: dict, filename: str = "<cell>"
) -> Callable:
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
    function = cast(Union[ast.FunctionDef, ast.AsyncFunctionDef], module.body[0])
    shared = sorted(assigned_names(body) - set(params))
    function.body = ([ast.Global(names=shared)] if shared else []) + list(body)
    ast.fix_missing_locations(module)
    scope: dict = {}
    exec(compile(module, filename, "exec"), namespace, scope)
    handler = scope[identifier]
    handler.__name__ = handler.__qualname__ = name
    handler.__module__ = namespace.get("__name__", "__main__")
    return handler


class MagicArgumentError(ValueError):
    """A ``%streammachine``/``%%streammachine`` line does not parse, or names a bad value."""

    reason: str  # argparse's own words, set by RaisingParser (absent on the other errors)


class RaisingParser(argparse.ArgumentParser):
    """argparse that raises instead of printing and exiting (a kernel must not exit)."""

    def error(self, message: str):
        error = MagicArgumentError(f"{self.prog}: {message}")
        error.reason = message
        raise error


def cell_parser() -> argparse.ArgumentParser:
    parser = RaisingParser(prog="%%streammachine", add_help=False)
    kinds = parser.add_subparsers(dest="kind", required=True, parser_class=RaisingParser)
    agent = kinds.add_parser("agent", add_help=False)
    agent.add_argument("stream")
    agent.add_argument("--group")
    agent.add_argument("--concurrency", type=int, default=1)
    agent.add_argument("--batch", action="store_true")
    agent.add_argument("--threaded", action="store_true")
    agent.add_argument("--name")
    timer = kinds.add_parser("timer", add_help=False)
    timer.add_argument("seconds", type=float)
    timer.add_argument("--name")
    return parser


@dataclass
class CellRegistration:
    """What a cell registers: ``register()`` does it (at once, or later if the app is starting)."""

    kind: str
    name: str
    description: str
    register: Callable[[], None]


def cell_registration(app, line: str, body: str, namespace: dict, filename: str = "<cell>") -> CellRegistration:
    """Parse ``line`` (what follows ``%%streammachine``) and compile ``body`` into the handler.

    Default names are stable, so re-running the cell replaces the handler:
    ``cell_agent:<stream>:<group>`` and ``cell_timer:<seconds>s``.
    """
    try:
        args = cell_parser().parse_args(shlex.split(line))
    except ValueError as exc:  # argparse's complaint (said once, after the whole line) or unbalanced quotes
        raise MagicArgumentError(f"%%streammachine {line}: {getattr(exc, 'reason', exc)}") from None
    if args.kind == "agent":
        if args.concurrency < 1:
            raise MagicArgumentError(f"--concurrency {args.concurrency}: expected an int >= 1")
        group = args.group or app.config.default_group
        name = args.name or f"cell_agent:{args.stream}:{group}"
        handler = handler_from_cell(body, ["messages" if args.batch else "message"], name, namespace, filename)

        def register_agent() -> None:
            app.agent(
                args.stream,
                group=group,
                concurrency=args.concurrency,
                batch=args.batch,
                name=name,
                threaded=args.threaded,
            )(handler)

        return CellRegistration(
            "agent", name, f"agent {name!r} on stream {args.stream!r} (group {group!r})", register_agent
        )
    if not (0 < args.seconds < float("inf")):
        raise MagicArgumentError(f"timer {args.seconds}: expected seconds > 0 (a finite number)")
    name = args.name or f"cell_timer:{args.seconds:g}s"
    handler = handler_from_cell(body, [], name, namespace, filename)

    def register_timer() -> None:
        app.timer(args.seconds, name=name)(handler)

    return CellRegistration("timer", name, f"timer {name!r} every {args.seconds:g}s", register_timer)
