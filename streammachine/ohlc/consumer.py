"""FastOHLCConsumer: ticks from a stream in, completed candles out, as a stage of an App.

Ticks are read in batches by a stage (``engine/stage.py``: consumer group,
retries, claims, dead letters) and fed to a ``FastOHLC`` with
``process_stream_batch`` (time = the stream id's ms). Completed candles go
to ``{prefix}_1m``, ``{prefix}_5m``... (see ``interval_suffix``).

A candle completes when a later tick of its symbol arrives (data time). A
quiet symbol's candle is completed by the stage's periodic hook: its data
clock is advanced by the wall-clock time elapsed since its last tick
arrived, minus ``grace_ms`` for ticks still in flight. Using elapsed time,
not the clock itself, keeps a replay of old data (ids far in the past) from
being flushed early, and is immune to clock skew between Redis (which
stamps the ids) and this host.

Two ways to run it:

- ``await consumer.start()`` / ``await consumer.stop()`` (e.g. in an App's
  ``on_startup``/``on_shutdown`` hooks, as in the reference example): on
  that App when ``app=`` is given, else on an App of its own;
- ``consumer.attach(app)`` before the App starts.

Crash safety is the stages' (``engine/commit.py``): each read's completed
candles, a snapshot of the aggregator (the table
``ohlc:{input_stream}:{group}``, key ``state``) and the XACK of its ticks
are one atomic commit. After a crash at any point the ticks not committed
are still pending and are handled again on the last committed snapshot: no
tick lost or counted twice, every candle emitted once. The in-memory
aggregator always answers to one committed snapshot (a token in it): when a
commit did not happen (a failure, a conflict), the next batch starts again
from the snapshot that did.

Limits: ONE consumer per group (concurrency 1, no worker processes), or
they would each see part of a symbol's ticks. On a Redis Cluster the output
streams must share the input stream's hash slot for the commit to be
atomic (hash-tagged names, e.g. input ``{ticks}`` and prefix
``{ticks}:candles``); otherwise candles are written at least once, with a
``_source`` field to deduplicate. A quiet symbol's clock restarts at
restore.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any, Dict, Iterable, List, Optional, Tuple

from streammachine._validate import check_non_negative
from streammachine.config import ConsumerConfig, TimerConfig
from streammachine.engine.effects import Emit
from streammachine.ohlc.candle import format_candle_for_redis, interval_suffix
from streammachine.ohlc.ticks import DEFAULT_INTERVALS, coerce_symbol
from streammachine.redis.connection import RedisConnection
from streammachine.redis.entries import parse_stream_id

log = logging.getLogger("streammachine.ohlc")

STATE_FORMAT = 2
STATE_KEY = "state"


def state_table_name(input_stream: str, group: str) -> str:
    """``ohlc:{input_stream}:{group}``, in the input stream's cluster slot.

    A name without a hash tag becomes the tag (``ticks`` -> ``{ticks}``, the
    slot of ``ticks``); a tagged one (``{t}.ticks``) is kept as it is.
    """
    opened = input_stream.find("{")
    tagged = opened >= 0 and input_stream.find("}", opened + 1) > opened + 1  # Redis's rule: a non-empty tag
    return f"ohlc:{input_stream if tagged else '{' + input_stream + '}'}:{group}"


class FastOHLCConsumer:
    """Real-time OHLC: consume ``input_stream``, emit completed candles to ``{output_stream_prefix}_{interval}``."""

    def __init__(
        self,
        input_stream: str,
        output_stream_prefix: str,
        intervals: Optional[Iterable[int]] = None,
        group: str = "ohlc_workers",
        price_field: str = "price",
        volume_field: str = "volume",
        symbol_field: str = "symbol",
        *,
        app: Any = None,
        connection: Optional[RedisConnection] = None,
        flush_every: float = 1.0,
        grace_ms: int = 1000,
        consumer_config: Optional[ConsumerConfig] = None,
        name: Optional[str] = None,
    ) -> None:
        from streammachine.ohlc import create_ohlc_aggregator

        if app is not None and connection is not None:
            raise ValueError("FastOHLCConsumer: pass app= or connection=, not both")
        check_non_negative("grace_ms", grace_ms, integer=True, expected="milliseconds >= 0")
        self.aggregator: Any = create_ohlc_aggregator(DEFAULT_INTERVALS if intervals is None else intervals)
        self.input_stream, self.group = input_stream, group
        self.fields = {"price_field": price_field, "volume_field": volume_field, "symbol_field": symbol_field}
        self.output_streams: Dict[int, str] = {
            interval: f"{output_stream_prefix}_{interval_suffix(interval)}" for interval in self.aggregator.intervals
        }
        self.flush_every = TimerConfig(interval=flush_every).interval  # validates
        self.grace_ms = grace_ms
        self.name = name or f"ohlc:{input_stream}->{output_stream_prefix}"
        self.table_name = state_table_name(input_stream, group)
        self.emitted = 0  # candles handed to a commit
        self.flush_runs = 0  # runs of the periodic flush of quiet symbols
        self._app = app
        self._connection = connection
        self._consumer_config = consumer_config
        self._symbol_key = (symbol_field.encode(), symbol_field)
        self._arrivals: Dict[str, Tuple[int, float]] = {}  # symbol -> (its latest tick ms, monotonic time it arrived)
        self._token: Optional[str] = None  # the committed snapshot the aggregator answers to (None: unknown)
        self._session = uuid.uuid4().hex[:12]
        self._writes = 0
        self._table: Any = None
        self._own_app: Any = None
        self._registered_on: Any = None

    # -- running -----------------------------------------------------------------

    def attach(self, app: Any) -> FastOHLCConsumer:
        """Register with ``app`` as a batch stage (with a periodic flush of quiet symbols)."""
        if self._app is not None and self._app is not app:
            raise ValueError("FastOHLCConsumer is already bound to another App")
        self._app = app
        self._register(app)
        return self

    async def start(self) -> None:
        """Start consuming: on the App given as ``app=`` (even while it starts), else on an App of its own."""
        if self._registered_on is not None:
            return
        if self._app is not None:
            self._register(self._app)
            return
        from streammachine.app import App

        connection = self._connection or RedisConnection()
        self._own_app = App(self.name, redis_url=await connection.resolve(), settings=connection.settings)
        self._register(self._own_app)
        await self._own_app.startup()

    async def stop(self, grace: float = 10.0) -> None:
        """Stop consuming (the batch in hand finishes and commits)."""
        app, self._registered_on = self._registered_on, None
        if app is None:
            return
        if app is self._own_app:
            self._own_app = None
            await app.shutdown()
        elif self.name in app.agents:
            app.unregister(self.name)
        self._token = None  # a restart takes up the committed snapshot again

    def _register(self, app: Any) -> None:
        config = self._consumer_config or app.config.consumer
        self._table = app.table(self.table_name)
        app.agent(
            self.input_stream,
            group=self.group,
            concurrency=1,
            batch=True,
            name=self.name,
            config=config,
            tables=[self._table],
            periodic=(self.flush_every, self.flush_quiet),
        )(self.handle_batch)
        self._registered_on = app

    @property
    def stats(self) -> Any:
        """The stage's counters (``AgentStats``), once it is registered with an App."""
        app = self._registered_on or self._app
        return None if app is None else app.stats(self.name)

    # -- the work (each call is a unit of the stage: its candles and snapshot are committed with its ticks) -----

    def handle_batch(self, messages: list) -> List[Emit]:
        """The batch handler: apply the ticks, return the candles they completed (with the snapshot written)."""
        self._take_up_committed()
        self._token = None  # changing: if this raises, the next call starts again from the committed snapshot
        entries = [m.data for m in messages]
        # as a read reply of the input stream: a tick without a symbol field belongs to the stream (upstream)
        self.aggregator.process_stream_batch([[self.input_stream, entries]], **self.fields)
        now = time.monotonic()
        out: List[Emit] = []
        touched = {self._symbol_of(fields) for _, fields in entries} - {None}
        for symbol in touched:
            assert symbol is not None
            latest = self.aggregator.latest_timestamp(symbol)
            if latest is not None:
                self._arrivals[symbol] = (latest, now)
                out += self._flush(symbol, None)
        self._save(max(entries, key=lambda e: parse_stream_id(e[0]))[0] if entries else None)
        return out

    def flush_quiet(self) -> List[Emit]:
        """The periodic hook: complete candles of quiet symbols by elapsed wall-clock time."""
        self.flush_runs += 1
        self._take_up_committed()
        token, self._token = self._token, None
        now = time.monotonic()
        out: List[Emit] = []
        for symbol, (latest, arrived) in list(self._arrivals.items()):
            as_of = latest + int((now - arrived) * 1000) - self.grace_ms
            if as_of > latest:
                out += self._flush(symbol, as_of)
        if out:
            self._save(None)
        else:
            self._token = token  # nothing changed
        return out

    def _take_up_committed(self) -> None:
        """Make the aggregator the committed snapshot's, unless it already is (the usual case: a token check)."""
        state = self._table.peek(STATE_KEY)
        if state is not None and state.get("token") == self._token:
            return
        if state is None:
            self.aggregator.clear()
        else:
            if state.get("format") != STATE_FORMAT:
                raise ValueError(f"{self.name}: stored state format {state.get('format')!r}, expected {STATE_FORMAT}")
            self.aggregator.restore(state["aggregator"])
        self._arrivals = {}
        now = time.monotonic()  # a quiet symbol's clock starts again now
        for symbol in self.aggregator.symbols:
            latest = self.aggregator.latest_timestamp(symbol)
            if latest is not None:
                self._arrivals[symbol] = (latest, now)
        self._token = None if state is None else state.get("token")

    def _save(self, last_id: Any) -> None:
        self._writes += 1
        token = f"{self._session}:{self._writes}"
        previous = self._table.peek(STATE_KEY)
        if last_id is None and previous is not None:
            last_id = previous.get("last_id")
        if isinstance(last_id, bytes):
            last_id = last_id.decode()
        self._table[STATE_KEY] = {
            "format": STATE_FORMAT,
            "token": token,
            "last_id": last_id,
            "aggregator": self.aggregator.snapshot(),
        }
        self._token = token

    def _symbol_of(self, fields: dict) -> Optional[str]:
        raw = fields.get(self._symbol_key[0], fields.get(self._symbol_key[1]))
        if raw is None:
            return self.input_stream
        try:
            return coerce_symbol(raw)
        except ValueError:
            return None

    def _flush(self, symbol: str, as_of: Optional[int]) -> List[Emit]:
        out = []
        for interval, stream in self.output_streams.items():
            for candle in self.aggregator.flush_interval(symbol, interval, as_of_ms=as_of):
                out.append(Emit(stream, format_candle_for_redis(candle, symbol, interval)))
        self.emitted += len(out)
        return out

    def __repr__(self) -> str:
        state = "running" if self._registered_on is not None else "stopped"
        return (
            f"FastOHLCConsumer({self.input_stream!r} -> {list(self.output_streams.values())}, group={self.group!r}, "
            f"{state}, emitted={self.emitted})"
        )
