"""Replay: run an App's agents over a range of history, in consumer groups of their own.

::

    result = await replay(app, start="2024-05-01T09:30:00Z", end="end", speed=10)
    result.handled, result.outputs["candles"]

Each selected agent's handler (typed or not) runs exactly as it does live,
through the same consumer machinery (ordering, batches, retries,
dead letters), in a separate replay App whose groups are created at
``start``: ``{group}:replay:{run}``, where ``run`` defaults to the start time
of the replay. The live groups, and a live App running meanwhile, are not
touched.

- ``start``/``end``: ``"start"``/``"end"``, an entry id, an ISO 8601 time or
  an age (``"1h ago"``), both inclusive (see ``streammachine.redis.positions``).
  ``"end"`` is the last entry when the replay begins, so it finishes.
- ``speed``: None (default) as fast as the handlers go; ``speed=10`` keeps
  entries ten times closer together than their ids' time stamps say
  (``speed=1``: real time).
- ``collect=True``: the handlers' non-None return values are kept in
  ``result.outputs[agent]`` as ``(entry_id, value)``, to compare with what the
  live run produced. What handlers write themselves (``app.send``, state)
  they write, live streams included: point them elsewhere for a dry run.
- ``count``: entries per read during the replay (default: the agent's own);
  a larger one replays faster, and changes the lists a batch agent gets.
- Done when every entry in range was handled or dead-lettered; the replay
  groups are then deleted unless ``keep_group=True`` (a replay with the same
  ``group=`` resumes from where a kept group stopped). Timers do not run;
  an agent with ``processes=N`` replays in this process (its ``concurrency``
  consumers), so collected outputs and pacing stay in one place.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple, Union

from streammachine._progress import Progress, ProgressOption
from streammachine.app import App
from streammachine.engine.specs import AgentSpec
from streammachine.redis.entries import as_text, parse_stream_id
from streammachine.redis.positions import MAX_SEQ, parse_id, parse_position, time_to_ms
from streammachine.typed.handlers import typed_handler

Position = Union[str, int, float]
COUNT_PAGE = 10000


@dataclass
class ReplayResult:
    """What a replay did: per agent counts, outputs when collected, timing."""

    groups: Dict[str, str]  # agent -> replay group
    streams: Dict[str, str]  # agent -> stream
    ranges: Dict[str, Tuple[Optional[str], Optional[str]]]  # stream -> (first id, last id) replayed
    handled: Dict[str, int]
    failed: Dict[str, int]
    dead_lettered: Dict[str, int]
    outputs: Dict[str, List[Tuple[str, Any]]] = field(default_factory=dict)
    seconds: float = 0.0
    speed: Optional[float] = None

    def outputs_of(self, agent: str) -> List[Tuple[str, Any]]:
        """The collected ``(entry_id, value)`` pairs of one agent, by full or short name."""
        matches = [v for name, v in self.outputs.items() if agent in (name, name.rsplit(".", 1)[-1])]
        if len(matches) != 1:
            raise KeyError(f"no single agent {agent!r} among {sorted(self.outputs)} (collect=True keeps outputs)")
        return matches[0]

    @property
    def total(self) -> int:
        return sum(self.handled.values())

    @property
    def rate(self) -> float:
        return self.total / self.seconds if self.seconds > 0 else 0.0


class Pacer:
    """Spaces handler calls like the entries' time stamps, ``speed`` times faster."""

    def __init__(self, speed: Optional[float]) -> None:
        if speed is not None and (isinstance(speed, bool) or not isinstance(speed, (int, float)) or not speed > 0):
            raise ValueError(f"speed={speed!r}: expected None (as fast as possible) or a number > 0")
        self.speed = speed
        self._origin: Optional[Tuple[int, float]] = None

    async def wait(self, event_ms: int) -> None:
        if self.speed is None:
            return
        now = time.monotonic()
        if self._origin is None:
            self._origin = (event_ms, now)
            return
        first_ms, first_wall = self._origin
        delay = first_wall + (event_ms - first_ms) / 1000.0 / self.speed - now
        if delay > 0:
            await asyncio.sleep(delay)


def _select(app: App, agents: Union[None, str, Callable, Iterable]) -> List[AgentSpec]:
    registered = app.agents
    if agents is None:
        if not registered:
            raise ValueError(f"app {app.name!r} has no agents to replay")
        return list(registered.values())
    wanted = [agents] if isinstance(agents, str) or callable(agents) else list(agents)
    chosen = []
    for item in wanted:
        matches = [
            s
            for n, s in registered.items()
            if item is s.handler or item == n or (isinstance(item, str) and n.rsplit(".", 1)[-1] == item)
        ]
        if len(matches) != 1:
            known = sorted(n.rsplit(".", 1)[-1] for n in registered)
            raise KeyError(f"replay: no single agent {getattr(item, '__name__', item)!r} in app {app.name!r}: {known}")
        chosen.append(matches[0])
    return chosen


def _end_bound(end: Position) -> Optional[str]:
    """The largest id in range (inclusive), or None for "end"."""
    if isinstance(end, str):
        text = end.strip()
        if text in ("end", "$", "+"):
            return None
        if text.isdigit():
            return f"{int(text)}-{MAX_SEQ}"  # a bare millisecond id: all of that millisecond
        if "-" in text and text.replace("-", "").isdigit():
            ms, seq = parse_id(text)
            return f"{ms}-{seq}"
    return f"{time_to_ms(end)}-{MAX_SEQ}"


async def _range(client: Any, stream: str, start: Position, end: Position) -> Tuple[str, Optional[str], Optional[str]]:
    """(SETID position, first id, last id) of the entries of ``stream`` in [start, end]; ids None when empty."""
    position = parse_position(start)
    if position.kind == "end":
        raise ValueError("replay: start='end' leaves nothing to replay; give a start before the end")
    upper = _end_bound(end) or "+"
    last = await client.xrevrange(stream, max=upper, min=position.first or "-", count=1)
    first = await client.xrange(stream, min=position.first or "-", max=upper, count=1)
    if not last or not first:
        return position.setid, None, None
    return position.setid, as_text(first[0][0]), as_text(last[0][0])


async def _count(client: Any, stream: str, first: str, last: str) -> int:
    """Entries in [first, last] (XLEN when that is the whole stream, else paged XRANGE)."""
    info = await client.xinfo_stream(stream)
    whole = as_text((info.get("first-entry") or [b""])[0]) == first and as_text(info["last-entry"][0]) == last
    if whole:
        return int(info["length"])
    total, cursor = 0, first
    while True:
        page = await client.xrange(stream, min=cursor, max=last, count=COUNT_PAGE)
        total += len(page)
        if len(page) < COUNT_PAGE:
            return total
        cursor = f"({as_text(page[-1][0])}"


def _replayed(
    spec: AgentSpec,
    last: Tuple[int, int],
    pacer: Pacer,
    tally: Dict[str, int],
    outputs: Optional[List[Tuple[str, Any]]],
    bar: Progress,
) -> Callable:
    """An async handler taking Message(s): skips entries past ``last``, paces, counts, collects, calls the agent."""
    bound = typed_handler(spec.handler, is_async=spec.is_async, batch=spec.batch, name=spec.name)
    is_async, threaded = spec.is_async, spec.threaded

    async def call(argument: Any) -> Any:
        if is_async:
            return await bound(argument)
        if threaded:
            return await asyncio.get_running_loop().run_in_executor(None, bound, argument)
        return bound(argument)

    def in_range(message: Any) -> bool:
        return parse_stream_id(message.key) <= last

    def done(ids: List[str], value: Any) -> None:
        tally[spec.name] += len(ids)
        bar.update(len(ids))
        if outputs is not None and value is not None:
            outputs.append((ids[-1], value))

    if spec.batch:

        async def handler(messages):
            kept = [m for m in messages if in_range(m)]
            if not kept:
                return None
            await pacer.wait(kept[0].timestamp_ms)
            value = await call(kept)
            done([m.key for m in kept], value)
            return value

    else:

        async def handler(message):
            if not in_range(message):
                return None
            await pacer.wait(message.timestamp_ms)
            value = await call(message)
            done([message.key], value)
            return value

    return handler


def _quiet(handler: Callable) -> Callable:
    """A replayed window's rows are collected, not written: the replay App has no output streams."""

    async def quiet(argument: Any) -> None:
        await handler(argument)

    return quiet


async def _finished(client: Any, targets: Dict[Tuple[str, str], str]) -> bool:
    """Every replay group delivered up to its last id and has nothing pending."""
    for (stream, group), last in targets.items():
        row = next((g for g in await client.xinfo_groups(stream) if as_text(g["name"]) == group), None)
        if row is None or row["pending"]:
            return False
        if parse_stream_id(row["last-delivered-id"]) < parse_stream_id(last):
            return False
    return True


async def replay(
    app: App,
    agents: Union[None, str, Callable, Iterable] = None,
    *,
    start: Position = "start",
    end: Position = "end",
    speed: Optional[float] = None,
    group: Optional[str] = None,
    collect: bool = False,
    keep_group: bool = False,
    progress: ProgressOption = True,
    timeout: Optional[float] = None,
    count: Optional[int] = None,
) -> ReplayResult:
    """Run ``agents`` (default: all of ``app``'s) over ``[start, end]`` of their streams (see the module doc)."""
    specs = _select(app, agents)
    pacer = Pacer(speed)
    run = group or f"replay:{int(time.time() * 1000)}"
    client = await app.redis.get_client()
    ranges: Dict[str, Tuple[str, Optional[str], Optional[str]]] = {}
    for spec in specs:
        if spec.stream not in ranges:
            ranges[spec.stream] = await _range(client, spec.stream, start, end)
    total = 0
    for stream, (_, first, last) in ranges.items():
        if first is not None and last is not None:
            total += await _count(client, stream, first, last) * sum(1 for s in specs if s.stream == stream)
    groups = {spec.name: f"{spec.group}:{run}" for spec in specs}
    tally = {spec.name: 0 for spec in specs}
    outputs: Dict[str, List[Tuple[str, Any]]] = {spec.name: [] for spec in specs} if collect else {}
    replayer = App(f"{app.name}-replay", redis_url=await app.redis.resolve(), settings=app.settings)
    targets: Dict[Tuple[str, str], str] = {}
    window_tables: List[str] = []
    started = time.monotonic()
    with Progress(progress, total, f"replay {app.name}") as bar:
        for spec in specs:
            setid, first, last = ranges[spec.stream]
            if last is None:
                continue
            tables: Tuple[Any, ...] = ()
            replayed = spec
            if spec.window is not None:  # the same window over fresh state, in a table of the replay's own
                fresh = replayer.table(f"{spec.window.table.name}:{run}")
                replayed = dataclasses.replace(spec, handler=spec.window.rebind(fresh), window=None)
                tables = (fresh,)
                window_tables.append(fresh.key)
            handler = _replayed(replayed, parse_stream_id(last), pacer, tally, outputs.get(spec.name), bar)
            config = spec.config.replace(start_id=setid, count=count)
            replayer.agent(
                spec.stream, groups[spec.name], spec.concurrency, batch=replayed.batch, name=spec.name,
                config=config, tables=tables,
            )(_quiet(handler) if tables else handler)  # fmt: skip
            targets[(spec.stream, groups[spec.name])] = last
        try:
            if targets:
                await replayer.startup()
                deadline = None if timeout is None else time.monotonic() + timeout
                while not await _finished(client, targets):
                    if deadline is not None and time.monotonic() > deadline:
                        raise TimeoutError(
                            f"replay of {app.name!r} not finished after {timeout}s: {bar.done} of {total} entries handled"
                        )
                    await asyncio.sleep(0.05)
        finally:
            await replayer.shutdown()
            if not keep_group:
                for stream, replay_group in targets:
                    await client.xgroup_destroy(stream, replay_group)
                if window_tables:
                    await client.delete(*window_tables)
    stats = {spec.name: replayer.stats(spec.name) for spec in specs if (spec.stream, groups[spec.name]) in targets}
    return ReplayResult(
        groups=groups,
        streams={spec.name: spec.stream for spec in specs},
        ranges={stream: (first, last) for stream, (_, first, last) in ranges.items()},
        handled=tally,
        failed={name: s.failed for name, s in stats.items()},
        dead_lettered={name: s.dead_lettered for name, s in stats.items()},
        outputs=outputs,
        seconds=time.monotonic() - started,
        speed=speed,
    )
