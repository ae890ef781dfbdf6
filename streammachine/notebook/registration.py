"""``%%streammachine agent|timer ...``: parse the magic's line and register the cell as a handler.

No IPython here: the magic and the headless notebook runner register cells
the same way, and the runner must work where IPython is not installed.
"""
from __future__ import annotations

import argparse
import shlex
from dataclasses import dataclass
from typing import Callable

from .cells import handler_from_cell


class MagicArgumentError(ValueError):
    """A ``%streammachine``/``%%streammachine`` line does not parse, or names a bad value."""


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

        def register() -> None:
            app.agent(args.stream, group=group, concurrency=args.concurrency, batch=args.batch, name=name,
                      threaded=args.threaded)(handler)

        return CellRegistration("agent", name, f"agent {name!r} on stream {args.stream!r} (group {group!r})",
                                register)
    if not args.seconds > 0:
        raise MagicArgumentError(f"timer {args.seconds}: expected seconds > 0")
    name = args.name or f"cell_timer:{args.seconds:g}s"
    handler = handler_from_cell(body, [], name, namespace, filename)

    def register() -> None:
        app.timer(args.seconds, name=name)(handler)

    return CellRegistration("timer", name, f"timer {name!r} every {args.seconds:g}s", register)
