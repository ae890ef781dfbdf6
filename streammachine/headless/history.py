"""The history commands of ``streammachine``: group, trim, replay, backfill.

::

    group list STREAM [--json]
    group reset STREAM GROUP --to start|end|ID|TIME [--drop-pending] [--yes]
    group delete STREAM GROUP [--yes]
    trim STREAM (--maxlen N | --minid ID | --max-age SECONDS) [--exact] [--yes]
    replay TARGET [--agent NAME ...] [--start POS] [--end POS] [--speed X] [--group NAME] [--keep-group]
           [--count N] [--timeout S] [--json]
    backfill STREAM FILE [--time-column COL] [--unit ms] [--chunk-size N] [--keep-time-column] [--resume]

Destructive commands (reset, delete, trim) say what they will do and ask;
``--yes`` skips the question, and with no answer (no terminal, end of input)
nothing is done. cli.py registers these with ``add_commands`` and runs them
with a sync-client factory; they return the exit code (0 done, 1 failed or
declined).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from typing import Any, Callable, Dict

from streammachine.config import Settings
from streammachine.redis import positions

Connect = Callable[[Any, Settings], Any]  # (args, settings) -> a sync redis client


def _float_above_zero(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a number > 0")
    return value


def _non_negative(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r}: expected an integer >= 0")
    return int(text)


def add_commands(
    command: Callable[[str, str], argparse.ArgumentParser], global_options: Callable[[argparse.ArgumentParser], None]
) -> None:
    """Add the subcommands through cli.py's ``command(name, help)`` factory (``global_options``: for sub-actions)."""
    group = command("group", "list, reset (move) or delete a stream's consumer groups")
    actions = group.add_subparsers(dest="action", metavar="ACTION", required=True)

    def action(name: str, help_text: str) -> argparse.ArgumentParser:
        parser = actions.add_parser(name, help=help_text, description=help_text)
        global_options(parser)
        return parser

    listing = action("list", "a stream's groups: consumers, pending, last delivered id, lag")
    listing.add_argument("stream")
    listing.add_argument("--json", action="store_true", help="print JSON")
    reset = action("reset", "move a group: its next read starts at --to (start, end, an id or a time, inclusive)")
    reset.add_argument("stream")
    reset.add_argument("group")
    reset.add_argument(
        "--to",
        required=True,
        metavar="POS",
        help="start | end | ID (1700000000000-0) | TIME (2024-05-01T10:00:00Z, '15m ago', --to=-2h)",
    )
    reset.add_argument("--drop-pending", action="store_true", help="also acknowledge what the group has pending")
    reset.add_argument("--yes", "-y", action="store_true", help="do not ask")
    delete = action("delete", "delete a group (its consumers and pending list; the stream stays)")
    delete.add_argument("stream")
    delete.add_argument("group")
    delete.add_argument("--yes", "-y", action="store_true", help="do not ask")

    trim = command("trim", "remove a stream's oldest entries: keep N, keep ids >= ID, or keep the last SECONDS")
    trim.add_argument("stream")
    rule = trim.add_mutually_exclusive_group(required=True)
    rule.add_argument("--maxlen", type=_non_negative, metavar="N", help="keep the newest N entries")
    rule.add_argument("--minid", metavar="ID", help="keep entries with ids >= ID")
    rule.add_argument("--max-age", type=_float_above_zero, metavar="SECONDS", help="keep entries younger than this")
    trim.add_argument("--exact", action="store_true", help="trim exactly (default: approximately, '~', cheaper)")
    trim.add_argument("--yes", "-y", action="store_true", help="do not ask")

    replay = command("replay", "run an App's agents over a range of history, in replay groups of their own")
    replay.add_argument("target", help="app.py[:attr], package.module[:attr] or notebook.ipynb[:attr]")
    replay.add_argument("--agent", action="append", metavar="NAME", help="only this agent (repeatable; default all)")
    replay.add_argument("--start", default="start", metavar="POS", help="start | ID | TIME (default start)")
    replay.add_argument("--end", default="end", metavar="POS", help="end | ID | TIME, inclusive (default end)")
    replay.add_argument("--speed", type=_float_above_zero, metavar="X", help="X times real time (default: flat out)")
    replay.add_argument("--group", metavar="NAME", help="replay run name (groups {group}:NAME; resumes a kept one)")
    replay.add_argument("--keep-group", action="store_true", help="keep the replay groups afterwards")
    replay.add_argument("--timeout", type=_float_above_zero, metavar="SECONDS", help="give up after this long")
    replay.add_argument("--count", type=_non_negative, metavar="N", help="entries per read (default: the agent's)")
    replay.add_argument("--json", action="store_true", help="print the result as JSON")

    backfill = command("backfill", "load a CSV or Parquet file into a stream, ids from its time column")
    backfill.add_argument("stream")
    backfill.add_argument("file", help=".csv, .csv.gz, .tsv or .parquet")
    backfill.add_argument("--time-column", default="timestamp", metavar="COL", help="default 'timestamp'")
    backfill.add_argument("--unit", default="ms", choices=("s", "ms", "us", "ns"), help="unit of numeric times")
    backfill.add_argument("--chunk-size", type=_non_negative, default=5000, metavar="N", help="XADDs per round trip")
    backfill.add_argument("--keep-time-column", action="store_true", help="also send the time column as a field")
    backfill.add_argument("--resume", action="store_true", help="skip rows the stream already has (a rerun)")


def confirm(question: str, assume_yes: bool) -> bool:
    """Ask on the terminal; no answer (end of input) is no."""
    if assume_yes:
        return True
    print(f"{question} [y/N] ", end="", file=sys.stderr, flush=True)
    try:
        answer = input()
    except EOFError:
        answer = ""
    return answer.strip().lower() in ("y", "yes")


def _fail(command: str, message: str) -> int:
    print(f"streammachine {command}: {message}", file=sys.stderr)
    return 1


def cmd_group(args: Any, settings: Settings, connect: Connect) -> int:
    client = connect(args, settings)
    try:
        if args.action == "list":
            groups = positions.list_groups_sync(client, args.stream)
            if args.json:
                print(json.dumps(groups, indent=2))
            elif not groups:
                print(f"stream {args.stream}: no consumer groups")
            for g in groups:
                print(
                    f"{g['name']}: consumers {g['consumers']}, pending {g['pending']}, "
                    f"last delivered {g['last_delivered_id']}, lag {g['lag']}"
                )
            return 0
        if args.action == "reset":
            target = positions.parse_position(args.to)
            where = {"start": "the first entry", "end": "new entries only"}.get(target.kind, f"entry {target.first}")
            dropping = " and acknowledge everything it has pending" if args.drop_pending else ""
            question = f"Move group {args.group!r} of stream {args.stream!r} to {where}{dropping}?"
            positions.list_groups_sync(client, args.stream)  # a missing stream fails before the question
            if not confirm(question, args.yes):
                return _fail("group reset", "not confirmed; nothing changed")
            result = positions.reset_group_sync(
                client, args.stream, args.group, args.to, drop_pending=args.drop_pending
            )
            print(
                f"group {args.group} of {args.stream}: last delivered {result['was']} -> {result['now']}; "
                f"next entry {result['next_id'] or '(the next one added)'}; pending {result['pending']}"
                + (f" ({result['dropped_pending']} acknowledged)" if args.drop_pending else "")
            )
            return 0
        question = f"Delete group {args.group!r} of stream {args.stream!r} (its consumers and pending list)?"
        positions.list_groups_sync(client, args.stream)
        if not confirm(question, args.yes):
            return _fail("group delete", "not confirmed; nothing changed")
        positions.delete_group_sync(client, args.stream, args.group)
        print(f"group {args.group} of {args.stream} deleted")
        return 0
    except (KeyError, ValueError) as exc:
        return _fail(f"group {args.action}", exc.args[0] if exc.args else str(exc))


def cmd_trim(args: Any, settings: Settings, connect: Connect) -> int:
    client = connect(args, settings)
    if args.minid is not None:
        try:
            positions.parse_id(args.minid)
        except ValueError as exc:
            return _fail("trim", str(exc))
    if not client.exists(args.stream):
        return _fail("trim", f"stream {args.stream!r} does not exist")
    if args.maxlen is not None:
        rule = f"keep its newest {args.maxlen} entries"
    elif args.minid is not None:
        rule = f"remove entries before {args.minid}"
    else:
        rule = f"remove entries older than {args.max_age:g} s"
    how = "exactly" if args.exact else "approximately (whole nodes; some older entries may stay)"
    if not confirm(f"Trim stream {args.stream!r}: {rule}, {how}?", args.yes):
        return _fail("trim", "not confirmed; nothing changed")
    removed = positions.trim_sync(
        client, args.stream, maxlen=args.maxlen, minid=args.minid, max_age=args.max_age, exact=args.exact
    )
    print(f"trimmed {removed} entries from {args.stream}; {client.xlen(args.stream)} left")
    return 0


def cmd_replay(args: Any, settings: Settings, connect: Connect) -> int:
    from streammachine.headless.targets import load_app
    from streammachine.replay import replay

    if args.redis_url:
        os.environ["REDIS_URL"] = args.redis_url  # the target's App() reads it when it is built

    async def go() -> Any:
        app = await load_app(args.target)
        try:
            return await replay(
                app,
                args.agent,
                start=args.start,
                end=args.end,
                speed=args.speed,
                group=args.group,
                keep_group=args.keep_group,
                timeout=args.timeout,
                count=args.count or None,
                progress=not args.json,
            )
        finally:
            await app.redis.close()

    try:
        result = asyncio.run(go())
    except (KeyError, ValueError, TimeoutError) as exc:
        return _fail("replay", exc.args[0] if exc.args else str(exc))
    if args.json:
        print(json.dumps(_replay_summary(result), indent=2))
    else:
        for agent, count in result.handled.items():
            first, last = result.ranges.get(result.streams[agent], (None, None))
            print(
                f"{agent}: {count} entries ({first} .. {last}), {result.failed.get(agent, 0)} failures, "
                f"{result.dead_lettered.get(agent, 0)} dead-lettered, group {result.groups[agent]}"
            )
        print(f"replayed {result.total} entries in {result.seconds:.2f}s ({result.rate:,.0f}/s)")
    return 0 if not any(result.dead_lettered.values()) else 1


def _replay_summary(result: Any) -> Dict[str, Any]:
    return {
        "handled": result.handled,
        "failed": result.failed,
        "dead_lettered": result.dead_lettered,
        "groups": result.groups,
        "streams": result.streams,
        "ranges": result.ranges,
        "seconds": round(result.seconds, 3),
        "speed": result.speed,
    }


def cmd_backfill(args: Any, settings: Settings, connect: Connect) -> int:
    from streammachine.data.backfill import BackfillError, backfill
    from streammachine.redis.connection import RedisConnection, resolve_url

    async def go() -> Any:
        connection = RedisConnection(url=resolve_url(settings, url=args.redis_url), settings=settings)
        try:
            return await backfill(
                connection,
                args.stream,
                args.file,
                time_column=args.time_column,
                unit=args.unit,
                chunk_size=max(1, args.chunk_size),
                keep_time_column=args.keep_time_column,
                resume=args.resume,
            )
        finally:
            await connection.close()

    try:
        result = asyncio.run(go())
    except (BackfillError, FileNotFoundError, ImportError) as exc:
        return _fail("backfill", str(exc))
    skipped = f" ({result.skipped} already there, skipped)" if result.skipped else ""
    print(
        f"wrote {result.written} entries to {result.stream}{skipped}: {result.first_id} .. {result.last_id} "
        f"in {result.seconds:.2f}s ({result.rate:,.0f}/s)"
    )
    return 0


COMMANDS = {"group": cmd_group, "trim": cmd_trim, "replay": cmd_replay, "backfill": cmd_backfill}


def run(name: str, args: Any, settings: Settings, *, connect: Connect) -> int:
    """Run history command ``name`` (cli.py's dispatch: ``COMMANDS[name](args, settings)``)."""
    return COMMANDS[name](args, settings, connect)
