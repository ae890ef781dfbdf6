"""FastOHLCConsumer: ticks from a stream in, completed candles out, through the core's consumer machinery.

Ticks are read in batches by a core ``StreamConsumer`` (consumer group,
acks, retries, claims: see ``streammachine.consumer``) and fed to a
``FastOHLC`` with ``process_stream_batch`` (time = the stream id's ms).
Completed candles go to ``{prefix}_1m``, ``{prefix}_5m``... (see
``interval_suffix``) in pipelined XADDs.

A candle completes when a later tick of its symbol arrives (data time). A
quiet symbol's candle is completed by a timer: its data clock is advanced by
the wall-clock time elapsed since its last tick arrived, minus ``grace_ms``
for ticks still in flight. Using elapsed time, not the clock itself, keeps
a replay of old data (ids far in the past) from being flushed early, and is
immune to clock skew between Redis (which stamps the ids) and this host.

Two ways to run it:

- ``await consumer.start()`` / ``await consumer.stop()`` (e.g. in an App's
  ``on_startup``/``on_shutdown`` hooks, as in the reference example), on
  ``app.redis`` when ``app=`` is given, else on a connection of its own;
- ``consumer.attach(app)`` before the App starts: registered as a batch agent
  and a timer of that App, which then runs, shows and stops it.

Limits, by design: the candles in progress live in this process's memory.
Run ONE consumer per group (concurrency 1, no worker processes): several
would each see part of a symbol's ticks. Ticks are acknowledged once taken
into the aggregator, so a crash loses the candles still in progress; a
candle that could not be sent (Redis unreachable) is kept and sent on the
next batch or timer run.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Dict, Iterable, List, Optional, Tuple

from ..agents import AgentSpec, AgentStats, TimerSpec
from ..config import ConsumerConfig, TimerConfig
from ..connection import RedisConnection
from ..runners import InProcessRunner, consumer_base
from ..timers import TimerRunner
from .candle import format_candle_for_redis, interval_suffix
from .ticks import DEFAULT_INTERVALS, coerce_symbol

log = logging.getLogger("streammachine.ohlc")


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
        from . import create_ohlc_aggregator

        if app is not None and connection is not None:
            raise ValueError("FastOHLCConsumer: pass app= or connection=, not both")
        if isinstance(grace_ms, bool) or not isinstance(grace_ms, int) or grace_ms < 0:
            raise ValueError(f"grace_ms={grace_ms!r}: expected milliseconds >= 0")
        self.aggregator = create_ohlc_aggregator(DEFAULT_INTERVALS if intervals is None else intervals)
        self.input_stream, self.group = input_stream, group
        self.fields = {"price_field": price_field, "volume_field": volume_field, "symbol_field": symbol_field}
        self.output_streams: Dict[int, str] = {
            interval: f"{output_stream_prefix}_{interval_suffix(interval)}" for interval in self.aggregator.intervals
        }
        self.flush_every = TimerConfig(interval=flush_every).interval  # validates
        self.grace_ms = grace_ms
        self.name = name or f"ohlc:{input_stream}->{output_stream_prefix}"
        self.stats = AgentStats()
        self.emitted = 0
        self._app = app
        self._connection = connection
        self._consumer_config = consumer_config
        self._symbol_key = (symbol_field.encode(), symbol_field)
        self._arrivals: Dict[str, Tuple[int, float]] = {}  # symbol -> (its latest tick ms, monotonic time it arrived)
        self._outbox: List[Tuple[str, dict]] = []
        self._runner: Optional[InProcessRunner] = None
        self._timer: Optional[TimerRunner] = None
        self._owns_connection = False
        self._send_failing = False

    # -- running standalone --------------------------------------------------

    async def start(self) -> None:
        """Start consuming (and the flush timer) on this event loop; returns once the group exists."""
        if self._runner is not None:
            return
        if self._connection is None:
            if self._app is not None:
                self._connection = self._app.redis
            else:
                self._connection, self._owns_connection = RedisConnection(), True
        settings = self._connection.settings
        spec = self._agent_spec(self._consumer_config or (
            self._app.config.consumer if self._app is not None else ConsumerConfig.from_settings(settings)))
        base = f"{consumer_base(settings.consumer_name)}-ohlc"
        await self._connection.get_client()  # resolves the URL new_client() needs
        self._runner = InProcessRunner(spec, self._connection, base, self.stats)
        await self._runner.start()
        self._timer = TimerRunner(TimerSpec(name=f"{self.name}.flush", handler=self.flush_quiet,
                                            config=TimerConfig(interval=self.flush_every)))
        self._timer.start()

    async def stop(self, grace: float = 10.0) -> None:
        """Stop reading (the batch in hand finishes), send what is due, close what it opened."""
        if self._timer is not None:
            self._timer.stop()
            self._timer = None
        if self._runner is not None:
            await self._runner.stop(grace)
            self._runner = None
        await self.flush_quiet()
        if self._owns_connection:
            await self._connection.close()
            self._connection, self._owns_connection = None, False

    # -- running as part of an App -------------------------------------------

    def attach(self, app: Any) -> "FastOHLCConsumer":
        """Register with ``app`` (before it starts): a batch agent, a flush timer, a last flush at shutdown."""
        if self._app is not None and self._app is not app:
            raise ValueError("FastOHLCConsumer is already bound to another App")
        self._app = app
        config = self._consumer_config or app.config.consumer
        app.agent(self.input_stream, group=self.group, concurrency=1, batch=True, name=self.name,
                  config=config)(self.handle_batch)
        app.timer(self.flush_every, name=f"{self.name}.flush")(self.flush_quiet)
        app.on_shutdown(self.flush_quiet)
        return self

    # -- the work --------------------------------------------------------------

    def _agent_spec(self, config: ConsumerConfig) -> AgentSpec:
        return AgentSpec(name=self.name, handler=self.handle_batch, stream=self.input_stream, group=self.group,
                         concurrency=1, batch=True, config=config)

    async def handle_batch(self, messages: list) -> None:
        """The batch agent: take the ticks, flush what they completed, send it. Never raises.

        Raising would make the core re-deliver the batch, counting its ticks twice.
        """
        self.aggregator.process_stream_batch([m.data for m in messages], **self.fields)
        now = time.monotonic()
        touched = {self._symbol_of(m.data[1]) for m in messages}
        touched.discard(None)
        for symbol in touched:
            latest = self.aggregator.latest_timestamp(symbol)
            if latest is not None:
                self._arrivals[symbol] = (latest, now)
                self._flush(symbol, None)
        await self._send()

    async def flush_quiet(self) -> None:
        """The timer: complete candles of quiet symbols by elapsed wall-clock time, and send."""
        now = time.monotonic()
        for symbol, (latest, arrived) in list(self._arrivals.items()):
            as_of = latest + int((now - arrived) * 1000) - self.grace_ms
            if as_of > latest:
                self._flush(symbol, as_of)
        await self._send()

    def _symbol_of(self, fields: dict) -> Optional[str]:
        raw = fields.get(self._symbol_key[0], fields.get(self._symbol_key[1]))
        try:
            return coerce_symbol(raw)
        except ValueError:
            return None

    def _flush(self, symbol: str, as_of: Optional[int]) -> None:
        for interval, stream in self.output_streams.items():
            for candle in self.aggregator.flush_interval(symbol, interval, as_of_ms=as_of):
                self._outbox.append((stream, format_candle_for_redis(candle, symbol, interval)))

    async def _send(self) -> None:
        """XADD the outbox, one pipeline per output stream; on failure keep it for the next try."""
        if not self._outbox:
            return
        by_stream: Dict[str, List[dict]] = {}
        for stream, record in self._outbox:
            by_stream.setdefault(stream, []).append(record)
        sent = 0
        try:
            for stream, records in by_stream.items():
                if self._app is not None:
                    await self._app.send_batch(stream, records)
                else:
                    await self._connection.pipeline_xadd(stream, records, maxlen=self._connection.settings.stream_maxlen)
                sent += len(records)
                self._outbox = [(s, r) for s, r in self._outbox if s != stream]
        except Exception as exc:  # Redis unreachable: the core consumer reconnects; we retry next time
            if not self._send_failing:
                log.warning("%s: could not send %d candles (%s); keeping them to retry",
                            self.name, len(self._outbox), exc)
            self._send_failing = True
        else:
            self._send_failing = False
        self.emitted += sent

    @property
    def pending_candles(self) -> int:
        """Candles completed but not yet sent."""
        return len(self._outbox)

    def __repr__(self) -> str:
        state = "running" if self._runner is not None else ("attached" if self._app is not None else "stopped")
        return (f"FastOHLCConsumer({self.input_stream!r} -> {list(self.output_streams.values())}, group={self.group!r}, "
                f"{state}, emitted={self.emitted})")
