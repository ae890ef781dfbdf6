"""FastOHLCConsumer: ticks from a stream in, completed candles out, through the core's consumer machinery.

Ticks are read in batches by a core ``StreamConsumer`` (consumer group,
acks, retries, claims: see ``streammachine.engine.consumer``) and fed to a
``FastOHLC`` with ``process_stream_batch`` (time = the stream id's ms).
Completed candles go to ``{prefix}_1m``, ``{prefix}_5m``... (see
``interval_suffix``), together with a checkpoint (see "Crash safety").

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

Crash safety: nothing lost, no tick counted twice, each candle emitted once
(at least once in the two cases named below).

- After each batch (and each timer run that completed candles) ONE atomic
  write, a Lua script (a MULTI would not do: a runtime error such as an
  output key of the wrong type would not undo the commands around it),
  XADDs the completed candles and SETs the checkpoint key
  ``{input_stream}:ohlc:{group}:state`` (``{input_stream}`` as a hash tag
  when the name has none, so the key shares the input stream's slot) to the
  aggregator's snapshot plus the last stream id applied. The batch handler
  returns, so the core acknowledges the ticks, only once that write
  succeeded; otherwise it raises and the ticks stay pending and are retried.
- Ticks with an id at or below the last applied id are skipped, so a
  re-delivery never counts twice; when the write failed, the retry only
  writes the checkpoint (with the candles still owed).
- On start the consumer restores the checkpoint, then re-applies, from the
  stream itself (XRANGE), every tick after the checkpoint's id up to the
  group's last delivered id: the ticks a crashed process took but never
  checkpointed, whichever consumer name they are pending under. Their
  candles come out again, once; the old deliveries, reclaimed later, are
  skipped by id.
- So after a crash (SIGKILL) at any point nothing is lost and no tick is
  counted twice: a crash before the write redoes the work from the older
  checkpoint; a crash after it (before the ack) leaves ticks that are
  skipped by id and acknowledged. Every candle is emitted exactly once,
  including when a write's reply was lost (the next write first reads the
  checkpoint back to learn whether it went through). Two exceptions make it
  at least once (a candle may repeat, none is lost): on a Redis Cluster
  whose output streams are not in the checkpoint key's slot (use
  hash-tagged names, e.g. input ``{ticks}`` and prefix ``{ticks}:candles``),
  the candles are XADDed first and the checkpoint SET after, not
  atomically; and a write failing for a reason Redis reports only after
  running part of the script (none is known: the script checks the output
  keys' types before writing).
- Limits: run ONE consumer per group (concurrency 1, no worker processes):
  several would each see part of a symbol's ticks and overwrite each
  other's checkpoint. Ticks trimmed from the input stream (MAXLEN) before
  they were checkpointed cannot be re-applied after a crash. A quiet
  symbol's timer clock restarts at restore. Ticks dead-lettered or skipped
  by the consumer policy after repeated write failures are still counted
  in the candles (they were applied before the write failed).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Dict, Iterable, List, Optional, Tuple

from streammachine.config import ConsumerConfig, TimerConfig
from streammachine.engine.executors import InProcessRunner
from streammachine.engine.identity import consumer_base
from streammachine.engine.specs import AgentSpec, AgentStats, TimerSpec
from streammachine.engine.timers import TimerRunner
from streammachine.ohlc import checkpoint
from streammachine.ohlc.candle import format_candle_for_redis, interval_suffix
from streammachine.ohlc.ticks import DEFAULT_INTERVALS, coerce_symbol
from streammachine.redis.connection import RedisConnection

log = logging.getLogger("streammachine.ohlc")

CATCH_UP_COUNT = 1000  # ticks per XRANGE when re-applying what a crashed run took


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
        self.checkpoint_key = checkpoint.checkpoint_key(input_stream, group)
        self.stats = AgentStats()
        self.emitted = 0
        self._app = app
        self._connection = connection
        self._consumer_config = consumer_config
        self._symbol_key = (symbol_field.encode(), symbol_field)
        self._arrivals: Dict[str, Tuple[int, float]] = {}  # symbol -> (its latest tick ms, monotonic time it arrived)
        self._outbox: List[Tuple[str, dict]] = []  # completed candles not yet written
        self._last_id: Optional[checkpoint.StreamId] = None  # the last tick applied to the aggregator
        self._saved_id: Optional[checkpoint.StreamId] = None  # the last tick the stored checkpoint includes
        self._seq = 0  # the stored checkpoint's write count
        self._unsure: Optional[tuple] = None  # (seq, candles, last id) of a write that failed: did it happen?
        self._restored = False
        self._lock = asyncio.Lock()  # one apply-and-write at a time (the batch handler, the timer)
        self._writer: Optional[checkpoint.CheckpointWriter] = None
        self._runner: Optional[InProcessRunner] = None
        self._timer: Optional[TimerRunner] = None
        self._owns_connection = False
        self._write_failing = False

    # -- running standalone --------------------------------------------------

    async def start(self) -> None:
        """Restore the checkpoint, start consuming (and the flush timer) on this event loop.

        Returns once the group exists. A checkpoint this consumer cannot take
        (other intervals, another format) raises here.
        """
        if self._runner is not None:
            return
        if self._connection is None:
            if self._app is not None:
                self._connection = self._app.redis
            else:
                self._connection, self._owns_connection = RedisConnection(), True
        settings = self._connection.settings
        spec = self._agent_spec(
            self._consumer_config
            or (self._app.config.consumer if self._app is not None else ConsumerConfig.from_settings(settings))
        )
        base = f"{consumer_base(settings.consumer_name)}-ohlc"
        await self._connection.get_client()  # resolves the URL new_client() needs
        await self.restore()
        self._runner = InProcessRunner(spec, self._connection, base, self.stats)
        await self._runner.start()
        self._timer = TimerRunner(
            TimerSpec(
                name=f"{self.name}.flush", handler=self.flush_quiet, config=TimerConfig(interval=self.flush_every)
            )
        )
        self._timer.start()

    async def stop(self, grace: float = 10.0) -> None:
        """Stop reading (the batch in hand finishes), write what is due, close what it opened."""
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
        self._restored = False  # a restart reads the checkpoint again

    # -- running as part of an App -------------------------------------------

    def attach(self, app: Any) -> FastOHLCConsumer:
        """Register with ``app`` (before it starts): a restore at startup, a batch agent, a flush timer, a last flush."""
        if self._app is not None and self._app is not app:
            raise ValueError("FastOHLCConsumer is already bound to another App")
        self._app = app
        config = self._consumer_config or app.config.consumer
        app.on_startup(self.restore)  # the App runs its startup hooks before its agents
        app.agent(self.input_stream, group=self.group, concurrency=1, batch=True, name=self.name, config=config)(
            self.handle_batch
        )
        app.timer(self.flush_every, name=f"{self.name}.flush")(self.flush_quiet)
        app.on_shutdown(self.flush_quiet)
        return self

    # -- the work --------------------------------------------------------------

    def _agent_spec(self, config: ConsumerConfig) -> AgentSpec:
        return AgentSpec(
            name=self.name,
            handler=self.handle_batch,
            stream=self.input_stream,
            group=self.group,
            concurrency=1,
            batch=True,
            config=config,
        )

    async def handle_batch(self, messages: list) -> None:
        """The batch agent: apply the new ticks, flush what they completed, write candles + checkpoint.

        Returns (so the core acknowledges the ticks) only once the write
        succeeded; raises otherwise, leaving them pending. Ticks at or below
        the last applied id are skipped: a re-delivery only retries the write.
        """
        async with self._lock:
            if not self._restored:
                await self._restore()
            entries = self._fresh([m.data for m in messages])
            if entries:
                self._apply(entries)
            await self._write()

    async def flush_quiet(self) -> None:
        """The timer: complete candles of quiet symbols by elapsed wall-clock time, and write them.

        A failed write is logged and retried with the next batch or timer run.
        """
        async with self._lock:
            try:
                if not self._restored:
                    await self._restore()
                now = time.monotonic()
                for symbol, (latest, arrived) in list(self._arrivals.items()):
                    as_of = latest + int((now - arrived) * 1000) - self.grace_ms
                    if as_of > latest:
                        self._flush(symbol, as_of)
                if self._outbox:
                    await self._write()
            except Exception as exc:  # Redis unreachable: the batches retry, and so does the next run
                if not self._write_failing:
                    log.warning(
                        "%s: could not write %d candles and the checkpoint (%s); will retry",
                        self.name,
                        len(self._outbox),
                        exc,
                    )
                self._write_failing = True

    async def restore(self) -> None:
        """Take up the stored checkpoint and re-apply the ticks delivered after it (see the module docstring)."""
        async with self._lock:
            await self._restore()

    def _fresh(self, entries: list) -> list:
        """The entries not applied yet (ids above the last applied one). A read's ids ascend."""
        last = self._last_id
        if last is None or not entries or checkpoint.id_key(entries[0][0]) > last:
            return entries
        return [entry for entry in entries if checkpoint.id_key(entry[0]) > last]

    def _apply(self, entries: list) -> None:
        """Ticks into the aggregator, completed candles of the symbols they touched into the outbox."""
        self.aggregator.process_stream_batch(entries, **self.fields)
        newest = checkpoint.id_key(entries[-1][0])
        if len(entries) > 1 and newest < checkpoint.id_key(entries[0][0]):  # not ascending (a re-delivery mix)
            newest = max(checkpoint.id_key(entry[0]) for entry in entries)
        if self._last_id is None or newest > self._last_id:
            self._last_id = newest
        now = time.monotonic()
        touched = {self._symbol_of(fields) for _, fields in entries}
        touched.discard(None)
        for symbol in touched:
            latest = self.aggregator.latest_timestamp(symbol)
            if latest is not None:
                self._arrivals[symbol] = (latest, now)
                self._flush(symbol, None)

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

    # -- the checkpoint ----------------------------------------------------------

    async def _client(self):
        if self._connection is None:
            self._connection = self._app.redis if self._app is not None else RedisConnection()
            self._owns_connection = self._app is None
        if self._writer is None:
            maxlen = (
                self._app.config.stream_maxlen if self._app is not None else self._connection.settings.stream_maxlen
            )
            self._writer = checkpoint.CheckpointWriter(self.checkpoint_key, maxlen)
        return await self._connection.get_client()

    async def _restore(self) -> None:
        """The state from the checkpoint (or empty), then the ticks delivered after it, re-applied from the stream.

        Everything in memory that the checkpoint does not hold is dropped
        first: it is rebuilt by the re-applied ticks.
        """
        client = await self._client()
        stored = await self._writer.read(client)
        self._outbox, self._arrivals, self._unsure = [], {}, None
        if stored is None:
            self.aggregator.clear()
            self._seq, self._last_id = 0, None
        else:
            self._seq, self._last_id, snapshot = stored
            self.aggregator.restore(snapshot)
            now = time.monotonic()  # a quiet symbol's clock starts again now
            for symbol in self.aggregator.symbols:
                latest = self.aggregator.latest_timestamp(symbol)
                if latest is not None:
                    self._arrivals[symbol] = (latest, now)
        self._saved_id = self._last_id
        await self._catch_up(client)
        self._restored = True
        if self._last_id != self._saved_id:
            log.info(
                "%s: re-applied the ticks after the checkpoint, up to %s", self.name, checkpoint.id_text(self._last_id)
            )

    async def _catch_up(self, client) -> None:
        """Apply the ticks after the checkpoint up to the group's last delivered id, and write.

        Those are the ticks an earlier run took (they are pending, or were
        acknowledged by a policy) without a checkpoint that holds them. With
        no checkpoint at all, that run's ticks are the group's pending ones.
        """
        last_delivered = await self._last_delivered(client)
        if last_delivered is None:
            return
        if self._last_id is not None:
            low = "(" + checkpoint.id_text(self._last_id)
        else:
            summary = await client.xpending(self.input_stream, self.group)
            if not summary or not summary.get("pending"):
                return
            low = summary["min"]
        high = checkpoint.id_text(last_delivered)
        while True:
            entries = await client.xrange(self.input_stream, min=low, max=high, count=CATCH_UP_COUNT)
            if not entries:
                break
            self._apply(entries)
            await self._write()
            low = "(" + checkpoint.id_text(checkpoint.id_key(entries[-1][0]))

    async def _last_delivered(self, client) -> Optional[checkpoint.StreamId]:
        try:
            groups = await client.xinfo_groups(self.input_stream)
        except Exception as exc:  # no stream yet: nothing was delivered
            if "no such key" in str(exc).lower():
                return None
            raise
        for group in groups:
            name = group.get("name")
            if (name.decode() if isinstance(name, bytes) else name) == self.group:
                return checkpoint.id_key(group["last-delivered-id"])
        return None

    async def _write(self) -> None:
        """XADD the outbox and SET the checkpoint in one atomic step, if anything is due. Raises on failure."""
        client = await self._client()
        if self._unsure is not None:
            await self._settle(client)
        if not self._outbox and self._last_id == self._saved_id:
            return
        seq, last_id, candles = self._seq + 1, self._last_id, len(self._outbox)
        payload = checkpoint.encode(seq, last_id, self.aggregator.snapshot())
        try:
            await self._writer.write(client, self._outbox, payload)
        except BaseException:
            self._unsure = (seq, candles, last_id)  # a lost reply: it may have happened
            raise
        self._written(seq, candles, last_id)

    def _written(self, seq: int, candles: int, last_id: Optional[checkpoint.StreamId]) -> None:
        self._seq, self._saved_id, self._unsure = seq, last_id, None
        del self._outbox[:candles]  # only this task appends to it, under the lock
        self.emitted += candles
        if self._write_failing:
            log.warning("%s: candles and checkpoint written again", self.name)
            self._write_failing = False

    async def _settle(self, client) -> None:
        """After a failed write: read the checkpoint back; if that write happened after all, count it done."""
        seq, candles, last_id = self._unsure
        stored = await self._writer.read(client)
        if stored is not None and stored[0] == seq:
            self._written(seq, candles, last_id)
        else:
            self._unsure = None

    @property
    def pending_candles(self) -> int:
        """Candles completed but not yet written."""
        return len(self._outbox)

    def __repr__(self) -> str:
        state = "running" if self._runner is not None else ("attached" if self._app is not None else "stopped")
        return (
            f"FastOHLCConsumer({self.input_stream!r} -> {list(self.output_streams.values())}, group={self.group!r}, "
            f"{state}, emitted={self.emitted})"
        )
