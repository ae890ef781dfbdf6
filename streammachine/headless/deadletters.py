"""``streammachine dlq``: list, show, replay and purge dead letters (``streammachine.redis.deadletters``).

::

    dlq list STREAM [--count N] [--start ID] [--end ID] [--json]
    dlq show STREAM ID [--json]
    dlq replay STREAM (ID ... | --all) [--target STREAM] [--yes] [--json]
    dlq purge STREAM (ID ... | --all | --before ID) [--yes]

STREAM is the original stream (``orders``) or its dead-letter stream
(``orders:dead``); ``--dead-letter-stream NAME`` names one an agent chose.
Replay and purge say what they will do and ask; ``--yes`` skips the
question, and with no answer (no terminal, end of input) nothing is done.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any, Callable, Optional

from streammachine.config import Settings
from streammachine.headless.history import Connect, confirm
from streammachine.redis import deadletters as dlq


def _count(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected an integer >= 1")
    return int(text)


def add_commands(
    command: Callable[[str, str], argparse.ArgumentParser], global_options: Callable[[argparse.ArgumentParser], None]
) -> None:
    """Add ``dlq`` through cli.py's ``command(name, help)`` factory (``global_options``: for its actions)."""
    parser = command("dlq", "dead letters: list, show, replay (back to their stream) or purge")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    def action(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = actions.add_parser(name, help=help_text, description=help_text)
        global_options(sub)
        sub.add_argument("stream", help="the stream (orders) or its dead-letter stream (orders:dead)")
        sub.add_argument("--dead-letter-stream", metavar="NAME", help="an agent's own dead_letter_stream")
        return sub

    listing = action("list", "a stream's dead letters, oldest first: error, agent, deliveries, original fields")
    listing.add_argument("--count", type=_count, default=100, metavar="N", help="at most N (default 100)")
    listing.add_argument("--start", default="-", metavar="ID", help="first id ('(' + id: after it; default -)")
    listing.add_argument("--end", default="+", metavar="ID", help="last id (default +)")
    listing.add_argument("--json", action="store_true", help="one JSON object per dead letter")
    show = action("show", "one dead letter in full")
    show.add_argument("id")
    show.add_argument("--json", action="store_true", help="print JSON")
    replay = action("replay", "send dead letters back to their stream and remove them from the dead-letter stream")
    replay.add_argument("ids", nargs="*", metavar="ID")
    replay.add_argument("--all", action="store_true", help="every dead letter there now")
    replay.add_argument("--target", metavar="STREAM", help="send them here instead of their own stream")
    replay.add_argument("--yes", "-y", action="store_true", help="do not ask")
    replay.add_argument("--json", action="store_true", help="print the result as JSON")
    purge = action("purge", "delete dead letters for good")
    purge.add_argument("ids", nargs="*", metavar="ID")
    purge.add_argument("--all", action="store_true", help="every dead letter")
    purge.add_argument("--before", metavar="ID", help="those older than this id or ms time")
    purge.add_argument("--yes", "-y", action="store_true", help="do not ask")


def _when(seconds: Optional[float]) -> str:
    return "?" if seconds is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def describe(letter: dlq.DeadLetter) -> str:
    """One line: id, where it came from, when, why, and its fields."""
    fields = " ".join(f"{k}={v}" for k, v in letter.fields.items())
    return (
        f"{letter.id} {letter.stream}/{letter.original_id} agent={letter.agent} deliveries={letter.deliveries} "
        f"at={_when(letter.time)} error={letter.error!r} {fields}"
    )


def _fail(action: str, message: str) -> int:
    print(f"streammachine dlq {action}: {message}", file=sys.stderr)
    return 1


def _selection(args: Any) -> Optional[str]:
    """What replay/purge was asked to act on, or an error when it is not exactly one choice."""
    chosen = [bool(args.ids), args.all, getattr(args, "before", None) is not None]
    if sum(chosen) != 1:
        ways = "IDs, --all or --before ID" if args.action == "purge" else "IDs or --all"
        return f"give exactly one of {ways}"
    return None


def _list(client: Any, args: Any, dead: str, where: dict) -> int:
    letters = dlq.list_dead_letters_sync(client, args.stream, start=args.start, end=args.end, count=args.count, **where)
    for letter in letters:
        print(json.dumps(letter.to_dict(), ensure_ascii=False) if args.json else describe(letter))
    if not letters and not args.json:
        print(f"no dead letters in {dead}")
    return 0


def _show(client: Any, args: Any, dead: str, where: dict) -> int:
    letter = dlq.show_dead_letter_sync(client, args.stream, args.id, **where)
    if letter is None:
        return _fail("show", f"dead-letter stream {dead!r} has no entry {args.id}")
    if args.json:
        print(json.dumps(letter.to_dict(), indent=2, ensure_ascii=False))
        return 0
    for name in ("id", "stream", "original_id", "agent", "group", "deliveries", "error"):
        print(f"{name}: {getattr(letter, name)}")
    print(f"at: {_when(letter.time)}")
    print("fields:")
    for key, value in letter.fields.items():
        print(f"  {key}: {value}")
    return 0


def _replay(client: Any, args: Any, dead: str, where: dict) -> int:
    ids = args.ids or None
    many = (
        f"{len(ids)} dead letter(s)"
        if ids
        else f"all {dlq.count_dead_letters_sync(client, args.stream, **where)} dead letters"
    )
    to = f"to {args.target!r}" if args.target else "to the streams they came from"
    if not confirm(f"Replay {many} of {dead!r} {to}?", args.yes):
        return _fail("replay", "not confirmed; nothing changed")
    return _report(dlq.replay_dead_letters_sync(client, args.stream, ids, target=args.target, **where), args.json)


def _purge(client: Any, args: Any, dead: str, where: dict) -> int:
    ids = args.ids or None
    if ids:
        many = f"{len(ids)} dead letter(s)"
    elif args.before is not None:
        many = f"the dead letters before {dlq.checked_id('--before', args.before)}"
    else:
        many = f"all {dlq.count_dead_letters_sync(client, args.stream, **where)} dead letters"
    if not confirm(f"Delete {many} of {dead!r} for good?", args.yes):
        return _fail("purge", "not confirmed; nothing changed")
    removed = dlq.purge_dead_letters_sync(client, args.stream, ids, before=args.before, **where)
    print(
        f"purged {removed} dead letter(s) from {dead}; {dlq.count_dead_letters_sync(client, args.stream, **where)} left"
    )
    return 0


ACTIONS = {"list": _list, "show": _show, "replay": _replay, "purge": _purge}


def cmd_dlq(args: Any, settings: Settings, connect: Connect) -> int:
    try:
        dead = dlq.dead_letter_stream_of(args.stream, args.dead_letter_stream)
        if args.action in ("replay", "purge"):
            problem = _selection(args)
            if problem:
                raise argparse.ArgumentTypeError(problem)
            for entry in args.ids:
                dlq.checked_id("ID", entry)  # a typo fails before the question
        return ACTIONS[args.action](
            connect(args, settings), args, dead, {"dead_letter_stream": args.dead_letter_stream}
        )
    except (KeyError, ValueError) as exc:
        return _fail(args.action, exc.args[0] if exc.args else str(exc))


def _report(result: dlq.ReplayResult, as_json: bool) -> int:
    if as_json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        per_stream: dict = {}
        for replayed in result.replayed:
            per_stream[replayed.stream] = per_stream.get(replayed.stream, 0) + 1
        spread = ", ".join(f"{n} to {stream}" for stream, n in per_stream.items()) or "none"
        print(f"replayed {result.count} dead letter(s) from {result.dead_letter_stream}: {spread}")
        if result.missing:
            print(f"{len(result.missing)} were gone by their turn (replayed or purged meanwhile)")
        if not result.atomic:
            print("across cluster slots: XADD then XDEL, each entry carrying _dlq_replay_of")
    if result.busy:
        return _fail(
            "replay", f"{len(result.busy)} are being replayed by another run (or one cut short < 60 s ago); retry later"
        )
    return 0


def run(_name: str, args: Any, settings: Settings, *, connect: Connect) -> int:
    return cmd_dlq(args, settings, connect)
