"""The ``streammachine`` command.

::

    streammachine [--redis-url URL] [--log-level LEVEL] COMMAND ...

    run TARGET [--workers N] [--metrics-port PORT] [--metrics-host HOST] [--dashboard-port PORT]
        Run an App headless until SIGINT/SIGTERM. TARGET: app.py[:attr],
        package.module[:attr] or notebook.ipynb[:attr].
    send STREAM [FIELD=VALUE ...] [--json '{...}']     add one entry, print its id
    tail STREAM [-n N] [--no-follow] [--json]          last N entries, then follow
    info STREAM [--json]                               length, groups, pending, lag, consumers
    server start|stop|status                           the per-user embedded server
    group list|reset|delete STREAM [GROUP --to POS]     consumer groups: list, move, delete
    dlq list|show|replay|purge STREAM [ID ...]          dead letters: inspect, send back, delete
    trim STREAM --maxlen N | --minid ID | --max-age S  remove the oldest entries
    replay TARGET [--start POS] [--end POS] [--speed X] an App's agents over history, in groups of their own
    backfill STREAM FILE [--time-column COL]           a CSV/Parquet file into a stream, ids from its times
    mcp [--transport stdio|streamable-http] [--host H] [--port P] [--read-only] [--allowed-host H]...
    dashboard [--host H] [--port P]                    the web dashboard of every instance on this Redis

``--redis-url`` (before or after the command) wins over REDIS_URL and
REDIS_HOST/PORT/DB; with nothing configured the local default or the
embedded server is used, as for ``App()``. Exit codes: 0 done, 1 failed
(Redis unreachable, no such stream, ...), 2 bad arguments or target.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import logging
import signal
import sys
from typing import List, Optional

from streammachine._redact import redact_url, scrub
from streammachine._speedups import decode_dict_bytes_to_utf8
from streammachine._validate import check_number
from streammachine.config import BadRedisURL, ConfigError, ConsumerConfig, Settings, check_redis_url
from streammachine.dashboard import standalone as dashboard
from streammachine.embedded import EmbeddedServerError, shared_server_status, shared_server_url, stop_shared_server
from streammachine.headless import deadletters, history
from streammachine.redis.catalog import read_catalog_sync
from streammachine.redis.connection import resolve_url
from streammachine.redis.entries import as_text
from streammachine.redis.producer import send_sync, validated_fields

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class CommandError(Exception):
    """A command that cannot do what was asked (exit code 1, message on stderr)."""


# --- argument types: each error names the value and what was expected ----------


def _int_in(low: int, high: Optional[int], expected: str):
    """An argparse type: an int within [low, high], else an error naming the value and ``expected``."""

    def convert(text: str) -> int:
        try:
            return check_number("value", int(text), integer=True, minimum=low, inclusive=True, maximum=high)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r}: expected {expected}") from None

    return convert


_positive_int = _int_in(1, None, "an integer >= 1")
_count = _int_in(0, None, "a count >= 0")
_port = _int_in(0, 65535, "a TCP port number 0-65535")


def _log_level(text: str) -> str:
    if text.upper() not in LOG_LEVELS:
        raise argparse.ArgumentTypeError(f"{text!r}: expected one of {', '.join(LOG_LEVELS)}")
    return text.upper()


def _json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f'{text!r}: expected a JSON object such as \'{{"field": "value"}}\'')
    return value


# --- the parser ----------------------------------------------------------------


def _global_options(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    default = argparse.SUPPRESS if suppress else None
    parser.add_argument(
        "--redis-url",
        metavar="URL",
        default=default,
        help="Redis URL (default: REDIS_URL, REDIS_HOST/PORT/DB, localhost:6379, else embedded)",
    )
    parser.add_argument(
        "--log-level",
        metavar="LEVEL",
        type=_log_level,
        default=default,
        help=f"one of {', '.join(LOG_LEVELS)} (default: STREAMMACHINE_LOG_LEVEL or INFO)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="streammachine", description="Stream processing on Redis Streams: run apps, inspect streams, serve MCP."
    )
    _global_options(parser, suppress=False)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        _global_options(sub, suppress=True)
        return sub

    run = command("run", "run an App headless until SIGINT/SIGTERM")
    run.add_argument("target", help="app.py[:attr], package.module[:attr] or notebook.ipynb[:attr]")
    run.add_argument(
        "--workers",
        type=_positive_int,
        default=1,
        metavar="N",
        help="worker processes sharing the consumer groups (timers run in worker 0 only)",
    )
    run.add_argument("--metrics-port", type=_port, metavar="PORT", help="serve Prometheus metrics on this port")
    run.add_argument(
        "--metrics-host", default="127.0.0.1", metavar="HOST", help="address for the metrics server (default 127.0.0.1)"
    )
    run.add_argument(
        "--dashboard-port", type=_port, metavar="PORT", help="run for the web dashboard on this port (one per Redis)"
    )
    run.add_argument("--worker-index", type=_count, help=argparse.SUPPRESS)
    run.add_argument("--stats-dir", help=argparse.SUPPRESS)
    run.add_argument("--ready-fd", type=_count, help=argparse.SUPPRESS)
    run.add_argument("--supervisor-pid", type=_count, help=argparse.SUPPRESS)

    send = command("send", "add one entry to a stream and print its id")
    send.add_argument("stream")
    send.add_argument("fields", nargs="*", metavar="FIELD=VALUE", help="fields as strings")
    send.add_argument(
        "--json",
        dest="json_fields",
        type=_json_object,
        metavar="OBJECT",
        help="fields as a JSON object (nested values are sent as JSON); FIELD=VALUE pairs win",
    )

    tail = command("tail", "print a stream's last entries, then follow it (like tail -f)")
    tail.add_argument("stream")
    tail.add_argument("-n", "--lines", type=_count, default=10, metavar="N", help="entries to show first (default 10)")
    tail.add_argument("--no-follow", action="store_true", help="print and exit instead of following")
    tail.add_argument("--json", action="store_true", help="one JSON object per entry")

    info = command("info", "a stream's length, consumer groups, pending, lag and consumers")
    info.add_argument("stream")
    info.add_argument("--json", action="store_true", help="print JSON")

    server = command("server", "start, stop or inspect the per-user embedded Valkey server")
    server.add_argument("action", choices=("start", "stop", "status"))

    history.add_commands(command, lambda sub: _global_options(sub, suppress=True))  # group, trim, replay, backfill
    deadletters.add_commands(command, lambda sub: _global_options(sub, suppress=True))  # dlq
    dashboard.add_command(command)

    mcp = command("mcp", "serve StreamMachine's MCP tools (stdio or streamable HTTP)")
    mcp.add_argument("--transport", choices=("stdio", "streamable-http"), default="stdio")
    mcp.add_argument("--host", default="127.0.0.1", help="streamable-http address (default 127.0.0.1)")
    mcp.add_argument("--port", type=_port, default=8000, help="streamable-http port (default 8000)")
    mcp.add_argument(
        "--read-only",
        action="store_true",
        default=None,
        help="hide the tools that write (also STREAMMACHINE_MCP_READ_ONLY=1)",
    )
    mcp.add_argument(
        "--allowed-host",
        action="append",
        default=[],
        metavar="NAME[:PORT]",
        help="a Host header HTTP clients may use, beyond loopback (repeatable; also STREAMMACHINE_MCP_ALLOWED_HOSTS)",
    )
    mcp.add_argument(
        "--allowed-origin",
        action="append",
        default=[],
        metavar="SCHEME://NAME[:PORT]",
        help="an Origin header HTTP clients may send (repeatable; also STREAMMACHINE_MCP_ALLOWED_ORIGINS)",
    )
    return parser


# --- commands ------------------------------------------------------------------


def _client(args, settings: Settings):
    from redis.exceptions import RedisClusterException

    from streammachine.console import sync_client

    try:
        url = resolve_url(settings, url=args.redis_url)
    except (ConnectionError, EmbeddedServerError) as exc:
        raise CommandError(str(exc)) from None
    try:
        return sync_client(url, cluster=settings.redis_cluster)
    except ValueError as exc:  # the URL does not parse (scheme, port, db)
        raise BadRedisURL(f"bad Redis URL {redact_url(url)}: {scrub(str(exc), [url])}") from None
    except RedisClusterException as exc:  # a cluster client connects at once (not a RedisError)
        raise CommandError(f"cannot reach the cluster at {redact_url(url)}: {exc}") from None


def cmd_run(args, settings: Settings) -> int:
    from streammachine.headless.options import RunOptions
    from streammachine.headless.run import run

    options = RunOptions(
        target=args.target,
        workers=args.workers,
        metrics_port=args.metrics_port,
        metrics_host=args.metrics_host,
        dashboard_port=args.dashboard_port,
        log_level=args.log_level,
        worker_index=args.worker_index,
        stats_dir=args.stats_dir,
        ready_fd=args.ready_fd,
        supervisor_pid=args.supervisor_pid,
    )
    if args.dashboard_port is not None:
        dashboard.check_options(settings, None)
    code = run(options, settings)
    from streammachine.engine.loop import exit_past_stuck_threads

    exit_past_stuck_threads(code)  # this process is ours: a handler thread that never returns must not keep it
    return code


def cmd_send(args, settings: Settings) -> int:
    from streammachine.console import parse_fields

    record = dict(args.json_fields or {})
    try:
        record.update(parse_fields(args.fields))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"argument FIELD=VALUE: {exc}") from None
    if not record:
        raise argparse.ArgumentTypeError('no fields to send: give FIELD=VALUE pairs or --json \'{"field": "value"}\'')
    try:  # before connecting: bad input never starts a server (argv holds lone surrogates for non-UTF-8 bytes)
        validated_fields(args.stream, record)
    except (TypeError, ValueError) as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    print(send_sync(_client(args, settings), args.stream, record, maxlen=settings.stream_maxlen))
    return 0


def _format_entry(entry_id, fields: dict, as_json: bool) -> str:
    decoded = decode_dict_bytes_to_utf8(fields or {})
    if as_json:
        return json.dumps({"id": as_text(entry_id), "fields": decoded}, ensure_ascii=False)
    return f"{as_text(entry_id)} " + " ".join(f"{k}={v}" for k, v in decoded.items())


def cmd_tail(args, settings: Settings) -> int:
    client = _client(args, settings)
    entries = list(reversed(client.xrevrange(args.stream, count=args.lines))) if args.lines else []
    for entry_id, fields in entries:
        print(_format_entry(entry_id, fields, args.json), flush=True)
    if args.no_follow:
        return 0
    if entries:
        cursor = as_text(entries[-1][0])
    else:  # only what arrives from now on; "$" would miss entries added between two reads
        try:
            cursor = as_text(client.xinfo_stream(args.stream)["last-generated-id"])
        except Exception:
            cursor = "0-0"
    stopping = []

    def stop(signum, _frame):
        stopping.append(signum)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        while True:
            reply = client.xread({args.stream: cursor}, count=100, block=1000)
            for _stream, batch in reply or []:
                for entry_id, fields in batch:
                    print(_format_entry(entry_id, fields, args.json), flush=True)
                    cursor = as_text(entry_id)
    except KeyboardInterrupt:
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)


def stream_details(client, stream: str, dead_letter_stream: Optional[str] = None) -> dict:
    """``info`` plus each group's consumers (listed where XINFO GROUPS counts them) and the dead-letter length."""
    from streammachine.redis.inspect import stream_info_sync

    dead = dead_letter_stream or ConsumerConfig().dead_letter_for(stream)
    details = stream_info_sync(client, stream, consumers=True, dead_letter_stream=dead)  # KeyError: no stream
    for group in details["groups"]:
        group["consumers"] = group.pop("consumer_details")
    details["models"] = read_catalog_sync(client, stream)
    return details


def cmd_info(args, settings: Settings) -> int:
    try:
        details = stream_details(_client(args, settings), args.stream)
    except KeyError as exc:
        raise CommandError(exc.args[0]) from None
    if args.json:
        print(json.dumps(details, indent=2, default=str))
        return 0
    print(
        f"stream {details['stream']}: {details['length']} entries "
        f"(first {details['first_id']}, last {details['last_id']})"
    )
    if not details["groups"]:
        print("  no consumer groups")
    for group in details["groups"]:
        print(
            f"  group {group['name']}: pending {group.get('pending')}, lag {group.get('lag')}, "
            f"last delivered {group.get('last-delivered-id')}, {len(group['consumers'])} consumers"
        )
        for consumer in group["consumers"]:
            print(f"    consumer {consumer['name']}: pending {consumer.get('pending')}, idle {consumer.get('idle')} ms")
    dead = details["dead_letter"]
    print(f"  dead letters ({dead['stream']}): {dead['length']}")
    for model in details["models"]:
        who = f" by agent {model['agent']}" if model.get("agent") else ""
        fields = ", ".join(f"{f['name']}: {f['type']}" + ("" if f["required"] else "?") for f in model["fields"])
        print(f"  model {model['model']} ({model['kind']}, {model['role']}{who}): {fields}")
    return 0


def cmd_server(args, settings: Settings) -> int:
    home = settings.home
    if args.action == "start":
        url = shared_server_url(home)
        print(
            f"embedded server running at {redact_url(url)} (data: {home / 'embedded'}); "
            "apps, the CLI and the MCP server on this machine find it when no Redis is configured"
        )
    elif args.action == "stop":
        print("embedded server stopped" if stop_shared_server(home) else "embedded server was not running")
    else:
        status = shared_server_status(home)
        if status["running"]:
            print(f"embedded server running at {status['url']} (pid {status.get('pid')}, data: {status['data_dir']})")
        else:
            print(f"embedded server not running (data: {status['data_dir']})")
            return 3  # like `systemctl status`: scripts can test it
    return 0


def cmd_mcp(args, settings: Settings) -> int:
    try:
        from streammachine.mcp.server import serve
    except ImportError as exc:
        if exc.name != "mcp" and not (exc.name or "").startswith("mcp."):
            raise
        raise CommandError(
            f"the MCP server needs the 'mcp' package (v2): pip install 'streammachine[mcp]' ({exc})"
        ) from None

    serve(
        dataclasses.replace(
            settings,
            log_level=args.log_level,
            mcp_allowed_hosts=settings.mcp_allowed_hosts + tuple(args.allowed_host),
            mcp_allowed_origins=settings.mcp_allowed_origins + tuple(args.allowed_origin),
        ),
        transport=args.transport,
        host=args.host,
        port=args.port,
        redis_url=args.redis_url,
        read_only=args.read_only,
    )
    return 0


COMMANDS = {"run": cmd_run, "send": cmd_send, "tail": cmd_tail, "info": cmd_info, "server": cmd_server, "mcp": cmd_mcp}
COMMANDS["dashboard"] = dashboard.run
COMMANDS.update({name: functools.partial(history.run, name, connect=_client) for name in history.COMMANDS})
COMMANDS["dlq"] = functools.partial(deadletters.run, "dlq", connect=_client)


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger().setLevel(level)


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command == "send" and not any(e.startswith("-") for e in extra):
        args.fields += extra  # FIELD=VALUE pairs after an option (`send s --json '{}' k=v`)
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        settings = Settings.from_env()
        if args.redis_url:
            check_redis_url(args.redis_url, "--redis-url")
    except ConfigError as exc:
        parser.exit(2, f"streammachine: {exc}\n")
    args.log_level = args.log_level or settings.log_level
    if args.log_level not in LOG_LEVELS:
        parser.exit(
            2, f"streammachine: STREAMMACHINE_LOG_LEVEL={args.log_level!r}: expected one of {', '.join(LOG_LEVELS)}\n"
        )
    if args.command != "run":  # a run target may be a path in any bytes; everything else goes to Redis as text
        for arg in sys.argv[1:] if argv is None else argv:
            try:
                arg.encode("utf-8")
            except UnicodeEncodeError:
                parser.exit(2, f"streammachine {args.command}: error: argument {arg!r} is not valid UTF-8 text\n")
    configure_logging(args.log_level)
    if args.redis_url and args.command == "run":  # passed down: to the target's App() and to the workers
        settings = dataclasses.replace(settings, redis_url=args.redis_url)
    from streammachine.headless.targets import TargetError

    try:
        return COMMANDS[args.command](args, settings)
    except argparse.ArgumentTypeError as exc:
        parser.exit(2, f"streammachine {args.command}: error: {exc}\n")
    except (TargetError, BadRedisURL) as exc:  # BadRedisURL: an App(redis_url=...) in the target, say
        print(f"streammachine {args.command}: {exc}", file=sys.stderr)
        return 2
    except (CommandError, ConfigError, ConnectionError, EmbeddedServerError, OSError, ImportError) as exc:
        print(f"streammachine {args.command}: {scrub(str(exc), [args.redis_url])}", file=sys.stderr)
        return 1
    except Exception as exc:
        import redis

        if isinstance(exc, redis.RedisError):
            print(f"streammachine {args.command}: Redis error: {scrub(str(exc), [args.redis_url])}", file=sys.stderr)
            return 1
        raise


def mcp_main(argv: Optional[List[str]] = None) -> int:
    """``streammachine-mcp [--transport ...] [--read-only] ...``: ``streammachine mcp`` by another name."""
    return main(["mcp", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
