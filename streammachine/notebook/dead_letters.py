"""``%streammachine dlq list|show|replay|purge``: dead letters from a notebook (``redis.deadletters`` does the work).

A line magic cannot ask, so replay and purge act only with ``--yes``. The
replay trims what it sends as the App's own sends do (``stream_maxlen`` /
``stream_max_age``).
"""

from __future__ import annotations

from typing import Any, Optional

import pandas as pd

from streammachine.config import AppConfig
from streammachine.redis import deadletters as dlq


def frame(letters: list) -> pd.DataFrame:
    """Dead letters as a table, one row per dead letter, indexed by its id."""
    columns = ["stream", "original_id", "agent", "group", "error", "deliveries", "time", "fields"]
    rows = [{name: getattr(letter, name) for name in columns} for letter in letters]
    table = pd.DataFrame(rows, columns=columns, index=pd.Index([letter.id for letter in letters], name="id"))
    table["time"] = pd.to_datetime(table["time"], unit="s", utc=True)
    return table


def _selection(args: Any) -> Optional[str]:
    chosen = [bool(args.ids), args.all, args.before is not None]
    if args.action == "replay" and args.before is not None:
        return "--before is for purge; replay takes IDs or --all"
    if args.action == "purge" and args.target is not None:
        return "--target is for replay"
    if sum(chosen) != 1:
        return "give exactly one of IDs, --all" + (" or --before ID" if args.action == "purge" else "")
    return None


def run(client: Any, args: Any, config: AppConfig) -> Any:
    """What ``%streammachine dlq ...`` shows; ValueError/KeyError for bad input (the magic words it)."""
    if args.action == "list":
        if args.ids or args.n < 1:
            raise ValueError(f"expected STREAM [-n N] with N >= 1 (got ids {args.ids}, -n {args.n})")
        return frame(dlq.list_dead_letters_sync(client, args.stream, count=args.n))
    if args.action == "show":
        if len(args.ids) != 1:
            raise ValueError("expected STREAM ID (one dead-letter id)")
        letter = dlq.show_dead_letter_sync(client, args.stream, args.ids[0])
        if letter is None:
            raise KeyError(f"{dlq.dead_letter_stream_of(args.stream)!r} has no entry {args.ids[0]}")
        return letter
    problem = _selection(args)
    if problem:
        raise ValueError(problem)
    ids = args.ids or None
    dead = dlq.dead_letter_stream_of(args.stream)
    if not args.yes:
        verb = "sends dead letters back" if args.action == "replay" else "deletes dead letters for good"
        raise ValueError(f"this {verb} (from {dead!r}): add --yes")
    if args.action == "replay":
        trim = {"maxlen": config.stream_maxlen, "max_age": config.stream_max_age}
        result = dlq.replay_dead_letters_sync(client, args.stream, ids, target=args.target, **trim)
        missing = f"; {len(result.missing)} gone meanwhile" if result.missing else ""
        busy = f"; {len(result.busy)} busy in another replay, run again later" if result.busy else ""
        print(f"streammachine: replayed {result.count} dead letter(s) from {dead}{missing}{busy}")
        return None
    removed = dlq.purge_dead_letters_sync(client, args.stream, ids, before=args.before)
    print(f"streammachine: purged {removed} dead letter(s) from {dead}")
    return None
