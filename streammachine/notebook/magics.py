"""``%load_ext streammachine``: the ``%streammachine`` line magic and ``%%streammachine`` cell magic.

Line magic (the App is found in the notebook's namespace, or chosen with ``use``)::

    %streammachine start | stop | status | dashboard | server
    %streammachine status --all | stop --all    (every App in this kernel)
    %streammachine send STREAM key=value ...
    %streammachine tail STREAM [-n N]
    %streammachine info STREAM
    %streammachine remove NAME
    %streammachine use VARIABLE
    %streammachine group list STREAM
    %streammachine group reset STREAM GROUP --to start|end|ID|TIME --yes [--drop-pending]
    %streammachine group delete STREAM GROUP --yes
    %streammachine dlq list STREAM [-n N]  |  dlq show STREAM ID
    %streammachine dlq replay STREAM (ID ... | --all) [--target STREAM] --yes
    %streammachine dlq purge STREAM (ID ... | --all | --before ID) --yes

Cell magic (the cell body is the handler; ``await`` works in it)::

    %%streammachine agent STREAM [--group G] [--concurrency N] [--batch] [--threaded] [--name NAME]
    %%streammachine timer SECONDS [--name NAME]

Re-running an agent or timer cell replaces the running handler (hot swap).
Magics run inside the kernel's event loop but cannot await: lifecycle
commands schedule work on that loop and return, and the Redis conveniences
use a synchronous client.
"""

from __future__ import annotations

import asyncio
from functools import partial
from typing import Any, Callable, Dict, List, Optional

import pandas as pd
from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class

from streammachine import console as commands
from streammachine.app import App, running_apps
from streammachine.cells import MagicArgumentError, RaisingParser, cell_parser, cell_registration
from streammachine.engine.lifecycle import Transition
from streammachine.notebook import dead_letters
from streammachine.notebook.status import status_frame
from streammachine.redis import positions
from streammachine.redis.inspect import fetch_groups_sync

USAGE = __doc__.split("\n\n", 1)[1].rsplit("\n\n", 1)[0]


def _line_parser() -> RaisingParser:
    parser = RaisingParser(prog="%streammachine", add_help=False)
    commands_ = parser.add_subparsers(dest="command", parser_class=RaisingParser)
    for name in ("start", "dashboard", "server", "help"):
        commands_.add_parser(name, add_help=False)
    for name in ("stop", "status"):
        commands_.add_parser(name, add_help=False).add_argument("--all", action="store_true")
    send = commands_.add_parser("send", add_help=False)
    send.add_argument("stream")
    send.add_argument("fields", nargs="+", metavar="key=value")
    tail = commands_.add_parser("tail", add_help=False)
    tail.add_argument("stream")
    tail.add_argument("-n", type=int, default=10)
    commands_.add_parser("info", add_help=False).add_argument("stream")
    commands_.add_parser("remove", add_help=False).add_argument("name")
    commands_.add_parser("use", add_help=False).add_argument("variable")
    group = commands_.add_parser("group", add_help=False)
    group.add_argument("action", choices=("list", "reset", "delete"))
    group.add_argument("stream")
    group.add_argument("group", nargs="?")
    group.add_argument("--to")
    group.add_argument("--drop-pending", action="store_true")
    group.add_argument("--yes", action="store_true")
    dlq = commands_.add_parser("dlq", add_help=False)
    dlq.add_argument("action", choices=("list", "show", "replay", "purge"))
    dlq.add_argument("stream")
    dlq.add_argument("ids", nargs="*")
    dlq.add_argument("-n", type=int, default=100)
    dlq.add_argument("--all", action="store_true")
    dlq.add_argument("--before")
    dlq.add_argument("--target")
    dlq.add_argument("--yes", action="store_true")
    return parser


_cell_parser = cell_parser  # the headless runner (targets.py) imports it from here


@magics_class
class StreamMachineMagics(Magics):
    shell: Any  # the InteractiveShell (set by Magics.__init__; never None once the extension is loaded)

    def __init__(self, shell) -> None:
        super().__init__(shell)
        self._app_variable: Optional[str] = None
        self._clients: Dict[str, object] = {}
        self._line = _line_parser()

    # -- finding the App -----------------------------------------------------

    def app(self) -> App:
        namespace = self.shell.user_ns
        if self._app_variable is not None:
            app = namespace.get(self._app_variable)
            if not isinstance(app, App):
                raise UsageError(f"%streammachine use {self._app_variable}: that variable no longer holds an App")
            return app
        found: Dict[int, str] = {}
        for variable, value in namespace.items():
            if isinstance(value, App) and not variable.startswith("_"):  # skip Out history (_, _3, ...)
                found.setdefault(id(value), variable)
        if len(found) == 1:
            return namespace[next(iter(found.values()))]
        if not found:
            raise UsageError("no streammachine App in this notebook: create one first, e.g. app = App('demo')")
        raise UsageError(
            f"several Apps in this notebook ({', '.join(sorted(found.values()))}): "
            "pick one with %streammachine use VARIABLE"
        )

    def _client(self, app: App):
        url = commands.server_url(app)
        client = self._clients.get(url)
        if client is None:
            client = self._clients[url] = commands.sync_client(url, cluster=app.redis.is_cluster)
        return client

    # -- the magic -----------------------------------------------------------

    @line_cell_magic
    def streammachine(self, line: str, cell: Optional[str] = None):
        if cell is not None:
            return self._register_cell(line, cell)
        try:
            args = self._line.parse_args(commands.split_args(line))
        except MagicArgumentError as exc:
            raise UsageError(f"{exc} (%streammachine help shows the usage)") from None
        except ValueError as exc:  # unbalanced quotes
            raise UsageError(str(exc)) from None
        if args.command in (None, "help"):
            print(USAGE)
            return None
        return getattr(self, f"_cmd_{args.command}")(args)

    def _cmd_use(self, args):
        value = self.shell.user_ns.get(args.variable)
        if not isinstance(value, App):
            raise UsageError(
                f"%streammachine use {args.variable}: expected a variable holding an App, got {type(value).__name__}"
            )
        self._app_variable = args.variable
        print(f"streammachine: using {value!r}")

    def _cmd_start(self, args):
        app = self.app()
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # App.start() would block here as the headless runner does
            raise UsageError(
                "%streammachine start needs a running event loop (a Jupyter kernel); "
                "elsewhere use app.start() in a script or `await app.run()`"
            ) from None
        transition = app.start()
        if transition.note:
            print(f"streammachine: app {app.name!r} is {transition.note}")
            return
        print(f"streammachine: starting app {app.name!r} ({len(app.agents)} agents, {len(app.timers)} timers)")
        transition.add_done_callback(lambda t: _report(t, f"app {app.name!r} running on {app.redis.safe_url}"))

    def _cmd_stop(self, args):
        apps = running_apps() if args.all else [self.app()]
        if not apps:
            print("streammachine: no app is running in this kernel")
        for app in apps:
            transition = app.stop()
            if transition.note:
                print(f"streammachine: app {app.name!r} is {transition.note}")
                continue
            print(f"streammachine: stopping app {app.name!r}")
            transition.add_done_callback(partial(_report, success=f"app {app.name!r} stopped"))

    def _cmd_status(self, args):
        if args.all:
            frame = status_frame([row for app in running_apps() for row in self._status_rows(app, with_app=True)])
        else:
            frame = status_frame(self._status_rows(self.app()))
        return frame.where(frame.notna(), "")  # a timer has no pending or lag: blank, not "None"

    def _status_rows(self, app: App, with_app: bool = False) -> List[dict]:
        groups = {}
        if app.redis.url is not None:  # never start a server just to show a table
            streams = [spec.stream for spec in app.agents.values()]
            groups = fetch_groups_sync(self._client(app), streams)
        rows = app.status_now(groups).rows()
        return [dict(row, app=app.name) for row in rows] if with_app else rows

    def _cmd_dashboard(self, args):
        return self.app().dashboard()  # shown as the cell's result; `d = %streammachine dashboard` keeps it

    def _cmd_server(self, args):
        print("streammachine: " + commands.describe_server(commands.server_info(self.app())))

    def _cmd_send(self, args):
        app = self.app()
        try:
            return commands.send(self._client(app), args.stream, args.fields, maxlen=app.config.stream_maxlen)
        except (TypeError, ValueError) as exc:
            raise UsageError(f"%streammachine send: {exc}") from None

    def _cmd_tail(self, args):
        if args.n < 1:
            raise UsageError(f"%streammachine tail: -n {args.n}: expected a count >= 1")
        client = self._client(self.app())
        if not client.exists(args.stream):
            raise UsageError(f"%streammachine tail: stream {args.stream!r} does not exist")
        return commands.tail(client, args.stream, args.n)

    def _cmd_info(self, args):
        try:
            return commands.info(self._client(self.app()), args.stream)
        except KeyError as exc:
            raise UsageError(f"%streammachine info: {exc.args[0]}") from None

    def _cmd_group(self, args):
        """Consumer groups (streammachine.redis.positions); reset and delete need --yes (a cell cannot be asked)."""
        client = self._client(self.app())
        try:
            if args.action == "list":
                return pd.DataFrame(positions.list_groups_sync(client, args.stream))
            if not args.group or (args.action == "reset" and not args.to):
                raise UsageError(
                    f"%streammachine group {args.action}: expected STREAM GROUP"
                    + " --to POS" * (args.action == "reset")
                )
            if not args.yes:
                raise UsageError(f"%streammachine group {args.action} changes where {args.group!r} reads: add --yes")
            if args.action == "reset":
                return positions.reset_group_sync(
                    client, args.stream, args.group, args.to, drop_pending=args.drop_pending
                )
            positions.delete_group_sync(client, args.stream, args.group)
            print(f"streammachine: group {args.group!r} of {args.stream!r} deleted")
        except (KeyError, ValueError) as exc:
            raise UsageError(f"%streammachine group {args.action}: {exc.args[0] if exc.args else exc}") from None

    def _cmd_dlq(self, args):
        """Dead letters (streammachine.redis.deadletters); replay and purge need --yes (a cell cannot be asked)."""
        app = self.app()
        try:
            return dead_letters.run(self._client(app), args, app.config)
        except (KeyError, ValueError) as exc:
            raise UsageError(f"%streammachine dlq {args.action}: {exc.args[0] if exc.args else exc}") from None

    def _cmd_remove(self, args):
        app = self.app()
        try:
            app.unregister(args.name)
        except KeyError as exc:
            raise UsageError(f"%streammachine remove: {exc.args[0]}") from None
        print(f"streammachine: removed {args.name!r}")

    # -- cells as handlers -----------------------------------------------------

    def _register_cell(self, line: str, cell: str):
        app = self.app()
        source = self.shell.transform_cell(cell)
        filename = self.shell.compile.cache(source)  # so tracebacks show the cell's lines
        try:
            registration = cell_registration(app, line, source, self.shell.user_ns, filename)
        except MagicArgumentError as exc:
            raise UsageError(f"{exc} (%streammachine help shows the usage)") from None
        except SyntaxError as exc:  # the body's own mistake: where it is, in one line, not a compiler traceback
            where = f"line {exc.lineno}: " if exc.lineno else ""
            raise UsageError(
                f"%%streammachine {line.strip()}: the cell body does not parse: {where}{exc.msg}"
            ) from None
        self._register(app, registration.register, registration.name, registration.description)

    def _register(self, app: App, register: Callable[[], None], name: str, what: str) -> None:
        replacing = name in app.agents or name in app.timers
        if app.state == "starting":
            # the app refuses registrations while it starts (run-all runs the next cell at once): wait for it
            asyncio.get_running_loop().create_task(_register_when_started(app, register, what))
            print(f"streammachine: {what}: registering once app {app.name!r} has started")
            return
        try:
            register()
        except (TypeError, ValueError) as exc:
            raise UsageError(str(exc)) from None
        if not replacing:
            print(f"streammachine: {what} registered" + (" and started" if app.is_running else ""))
        elif not app.is_running:
            print(f"streammachine: {what} replaced")


async def _register_when_started(app: App, register: Callable[[], None], what: str) -> None:
    while app.state == "starting":
        await asyncio.sleep(0.01)
    try:
        register()
    except Exception as exc:
        print(f"streammachine: could not register {what}: {type(exc).__name__}: {exc}")
    else:
        print(f"streammachine: {what} registered")


def _report(transition: Transition, success: str) -> None:
    try:
        error = transition.exception()
    except BaseException:  # cancelled
        print(f"streammachine: cancelled before: {success}")
        return
    if error is not None:
        print(f"streammachine: failed: {type(error).__name__}: {error}")
    else:
        print(f"streammachine: {success}")


def load_ipython_extension(ipython) -> None:
    ipython.register_magics(StreamMachineMagics)
