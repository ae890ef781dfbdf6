"""Pure-Python OHLC core: the twin of ``streammachine/_speedups/_ohlc.pyx``.

Same behaviour as the compiled core (the parity tests hold them to it), a
different strategy for speed: a Python function call per tick leaves little
time for per-candle bookkeeping, so ``update_tick`` only checks the tick and
appends it to its symbol's pending list. Pending ticks are aggregated with
numpy, a chunk at a time, whenever something reads the candles (or a
symbol's pending list reaches ``CHUNK``). The aggregation reproduces the
tick-by-tick result exactly, including the float rounding of volume sums
(``np.add.at`` adds in arrival order, as the compiled loop does).

Candle state per (symbol, interval): a dict ``start_ms -> (open, high, low,
close, volume, count, first_ts, last_ts)`` and the watermark below which
candles were flushed (ticks under it are late and dropped). Tuples of plain
numbers, like the flat pending lists, are not tracked by the cyclic GC:
holding millions of them costs no GC passes.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from streammachine.ohlc.ticks import (
    both_spellings,
    coerce_symbol,
    coerce_tick,
    normalise_intervals,
    prepare_tick_arrays,
)
from streammachine.redis.entries import iter_stream_batches, parse_stream_id_timestamp

CHUNK = 32768  # pending ticks per symbol before they are aggregated anyway
_PENDING_LIMIT = 3 * CHUNK  # pending lists are flat: price, volume, timestamp, price, ...
assert _PENDING_LIMIT == 98304, "update_tick's fast path spells this limit out"

_OPEN, _HIGH, _LOW, _CLOSE, _VOLUME, _COUNT, _FIRST_TS, _LAST_TS = range(8)


class _Series:
    __slots__ = ("candles", "watermark")

    def __init__(self) -> None:
        self.candles: Dict[int, tuple] = {}
        self.watermark: Optional[int] = None


class _Symbol:
    __slots__ = ("name", "pending", "latest_ts", "series")

    def __init__(self, name: str, interval_count: int) -> None:
        self.name = name
        self.pending: List[float] = []  # flat: price, volume, timestamp (an int), price, ...
        self.latest_ts: Optional[int] = None
        self.series = [_Series() for _ in range(interval_count)]


class OHLCCore:
    """Candle state and the update paths; the read API comes from ``OHLCMethods``."""

    __slots__ = ("_intervals", "_symbols", "_pending", "_names", "_ticks", "_late", "_rejected")

    def __init__(self, intervals: Any = None) -> None:
        self._intervals = normalise_intervals(intervals)
        self.clear()

    def clear(self) -> None:
        """Forget every candle, symbol and counter."""
        self._symbols: Dict[Any, _Symbol] = {}  # str and bytes spellings -> one state
        self._pending: Dict[Any, list] = {}  # the same keys -> that state's pending list (one lookup per tick)
        self._names: List[str] = []
        self._ticks = self._late = self._rejected = 0

    # -- counters and lookups ------------------------------------------------

    @property
    def intervals(self) -> Tuple[int, ...]:
        return self._intervals

    @property
    def tick_count(self) -> int:
        """Valid ticks taken (late ones included)."""
        self._aggregate_all()
        return self._ticks

    @property
    def late_ticks(self) -> int:
        """Ticks that fell in a candle already flushed for some interval (dropped there)."""
        self._aggregate_all()
        return self._late

    @property
    def rejected(self) -> int:
        """Ticks refused as invalid (bad price, volume, timestamp, symbol or entry)."""
        return self._rejected

    @property
    def symbols(self) -> List[str]:
        """Symbols seen, in first-seen order."""
        return list(self._names)

    def latest_timestamp(self, symbol: Any) -> Optional[int]:
        state = self._find(symbol)
        if state is None:
            return None
        self._aggregate(state)
        return state.latest_ts

    # -- updates -------------------------------------------------------------

    def update_tick(self, symbol: Any, price: Any, volume: Any, timestamp_ms: Any) -> None:
        """Add one trade. Raises ValueError (naming the field) for a bad one."""
        # The hot path: exact types, finite numbers, a known symbol. `x - x == 0.0` is False for NaN and inf.
        if (
            type(price) is float
            and type(volume) is float
            and type(timestamp_ms) is int
            and price - price == 0.0
            and volume >= 0.0
            and volume - volume == 0.0
            and 0 <= timestamp_ms <= 9223372036854775807
        ):
            try:
                pending = self._pending.get(symbol)
            except TypeError:  # unhashable: the checked path names the problem
                pending = None
            if pending is not None and len(pending) < 98304:  # _PENDING_LIMIT as a literal: no global lookup
                # flat, not a tuple per tick: floats and ints are not tracked by the cyclic GC,
                # a million held tuples would be (and GC passes over them cost more than the ticks)
                pending += (price, volume, timestamp_ms)
                return
        self._update_tick_checked(symbol, price, volume, timestamp_ms)

    def _update_tick_checked(self, symbol: Any, price: Any, volume: Any, timestamp_ms: Any) -> None:
        try:
            name, price, volume, timestamp_ms = coerce_tick(symbol, price, volume, timestamp_ms)
        except ValueError:
            self._rejected += 1
            raise
        self._hold(self._symbols.get(name) or self._create(name), price, volume, timestamp_ms)

    def _hold(self, state: _Symbol, price: float, volume: float, stamp: int) -> None:
        if len(state.pending) >= _PENDING_LIMIT:
            self._aggregate(state)
        state.pending += (price, volume, stamp)

    def process_stream_batch(
        self, entries: Any, price_field: str = "price", volume_field: str = "volume", symbol_field: str = "symbol"
    ) -> int:
        """Take ticks from a read reply (RESP2/RESP3) or a list of (id, fields); time is the id's ms.

        A tick without ``symbol_field`` belongs to its stream (``ticks:AAPL``
        gives the symbol ``ticks:AAPL``; a bare list of entries has no stream
        name, so such a tick is rejected); one without ``volume_field`` has
        volume 0. Bad rows are skipped and counted in ``rejected``; returns the
        number taken.
        """
        price_str, price_bytes = both_spellings(price_field)
        volume_str, volume_bytes = both_spellings(volume_field)
        symbol_str, symbol_bytes = both_spellings(symbol_field)
        taken = rejected = 0
        known, find = self._symbols.get, self._find_or_create
        for stream, batch in iter_stream_batches(entries):
            for entry in batch:
                # one inlined pass per entry: this loop is the Python core's consumer hot path
                if not isinstance(entry, (tuple, list)) or len(entry) != 2:
                    rejected += 1
                    continue
                entry_id, fields = entry
                try:
                    if type(entry_id) is bytes:  # the usual id, checked inline as parse_stream_id does
                        ms, sep, seq = entry_id.partition(b"-")
                        if not (sep and ms.isdigit() and seq.isdigit()):
                            raise ValueError(entry_id)
                        stamp = int(ms)
                        if stamp > 9223372036854775807:
                            raise ValueError(entry_id)
                    else:
                        stamp = parse_stream_id_timestamp(entry_id)
                    raw = fields.get(price_bytes)
                    price = float(fields.get(price_str) if raw is None else raw)
                    raw = fields.get(volume_bytes)
                    if raw is None:
                        raw = fields.get(volume_str)
                    volume = 0.0 if raw is None else float(raw)
                    raw = fields.get(symbol_bytes)
                    if raw is None:
                        raw = fields.get(symbol_str)
                    raw_symbol = stream if raw is None else raw
                    # symbols are created only for otherwise valid ticks, as the compiled core does
                    valid = price - price == 0.0 and volume >= 0.0 and volume - volume == 0.0
                    state = (known(raw_symbol) or find(raw_symbol)) if valid else None
                except (ValueError, TypeError, AttributeError, OverflowError):
                    state = None
                if state is None:
                    rejected += 1
                    continue
                pending = state.pending
                if len(pending) >= _PENDING_LIMIT:
                    self._aggregate(state)
                pending += (price, volume, stamp)
                taken += 1
        self._rejected += rejected
        return taken

    def update_arrays(self, symbols: Any, prices: Any, volumes: Any, timestamps_ms: Any) -> int:
        """Add many ticks at once (arrays in arrival order); ``symbols`` may be one symbol for all.

        Bad rows are skipped and counted in ``rejected``; returns the number taken.
        """
        symbols, prices, volumes, stamps, valid = prepare_tick_arrays(symbols, prices, volumes, timestamps_ms)
        if isinstance(symbols, (str, bytes)):
            state = self._find_or_create(symbols)
            if state is None:
                valid[:] = False
            row_states = [state]
            state_of_row = np.zeros(len(prices), dtype=np.intp)
        else:
            row_states, state_of_row = self._states_of_rows(symbols, valid)
            valid &= state_of_row >= 0
        taken = int(valid.sum())
        self._rejected += len(valid) - taken
        if taken == 0:
            return 0
        rows = np.flatnonzero(valid)
        order = rows[np.argsort(state_of_row[rows], kind="stable")]  # grouped by symbol, arrival order kept
        grouped = state_of_row[order]
        bounds = np.flatnonzero(np.diff(grouped)) + 1
        for chunk in np.split(order, bounds):
            state = row_states[state_of_row[chunk[0]]]
            self._aggregate(state)  # its earlier single ticks first, to keep arrival order
            self._merge(state, prices[chunk], volumes[chunk], stamps[chunk])
        return taken

    def _states_of_rows(self, symbols: np.ndarray, valid: np.ndarray):
        """One state per distinct symbol of the valid rows, and each row's index into that list (-1: none).

        States are created in order of first appearance, as the compiled
        core's row-by-row loop creates them.
        """
        import pandas as pd  # hash-based factorize: fast, handles str and bytes mixed, and None

        rows = np.flatnonzero(valid)
        try:
            codes, uniques = pd.factorize(symbols[rows], use_na_sentinel=True)
        except TypeError:  # unhashable values: map them one by one
            codes, uniques, seen = np.full(len(rows), -1, dtype=np.intp), [], {}
            for i, value in enumerate(symbols[rows].tolist()):
                if isinstance(value, (str, bytes)):
                    if value not in seen:
                        seen[value] = len(uniques)
                        uniques.append(value)
                    codes[i] = seen[value]
        states = [self._find_or_create(value) for value in uniques]
        first_index: Dict[int, int] = {}
        for i, state in enumerate(states):
            if state is not None:
                first_index.setdefault(id(state), i)  # b"X" and "X" are one symbol: one index
        remap = np.array([first_index[id(s)] if s is not None else -1 for s in states] + [-1], dtype=np.intp)
        state_of_row = np.full(len(symbols), -1, dtype=np.intp)
        state_of_row[rows] = remap[codes]
        return states, state_of_row

    # -- reading (used by OHLCMethods) ---------------------------------------

    def _rows(self, symbol: Any, index: int, before: Optional[int]) -> list:
        state = self._find(symbol)
        if state is None:
            return []
        self._aggregate(state)
        candles = state.series[index].candles
        return [_row(start, candles[start]) for start in sorted(candles) if before is None or start < before]

    def _flush(self, symbol: Any, index: int, before: int) -> list:
        state = self._find(symbol)
        if state is None:
            return []
        self._aggregate(state)
        series = state.series[index]
        gone = sorted(start for start in series.candles if start < before)
        rows = [_row(start, series.candles.pop(start)) for start in gone]
        if series.watermark is None or before > series.watermark:
            series.watermark = before
        return rows

    # -- snapshots (the format is in snapshot.py) ------------------------------

    def _export(self) -> list:
        """[(name, latest_ts or None, [(watermark or None, [row, ...]) per interval]), ...], first-seen order.

        A row: (start, open, high, low, close, volume, trade_count, first_ts, last_ts).
        """
        self._aggregate_all()
        out = []
        for name in self._names:
            state = self._symbols[name]
            # a held candle is (open, high, low, close, volume, count, first_ts, last_ts): the row's order
            series = [(s.watermark, [(start, *s.candles[start]) for start in sorted(s.candles)]) for s in state.series]
            out.append((name, state.latest_ts, series))
        return out

    def _load(self, symbols: list, ticks: int, late: int, rejected: int) -> None:
        """Replace the state with checked ``_export`` data (see snapshot.parse)."""
        self.clear()
        for name, latest, series in symbols:
            state = self._create(name)
            state.latest_ts = latest
            for held, (watermark, rows) in zip(state.series, series):
                held.watermark = watermark
                held.candles = {
                    start: (o, h, lo, c, v, n, first, last) for start, o, h, lo, c, v, n, first, last in rows
                }
        self._ticks, self._late, self._rejected = ticks, late, rejected

    # -- state ---------------------------------------------------------------

    def _find(self, symbol: Any) -> Optional[_Symbol]:
        if not isinstance(symbol, (str, bytes)):
            coerce_symbol(symbol)  # raises the ValueError naming it
        return self._symbols.get(symbol)

    def _find_or_create(self, symbol: Any) -> Optional[_Symbol]:
        """The state for a symbol from a batch, or None when it is not a valid symbol."""
        try:
            return self._symbols.get(symbol) or self._create(coerce_symbol(symbol))
        except (ValueError, TypeError):
            return None

    def _create(self, name: str) -> _Symbol:
        state = self._symbols.get(name)
        if state is None:
            state = _Symbol(name, len(self._intervals))
            for key in both_spellings(name):
                self._symbols[key] = state
                self._pending[key] = state.pending
            self._names.append(name)
        return state

    def _aggregate_all(self) -> None:
        for name in self._names:
            self._aggregate(self._symbols[name])

    def _aggregate(self, state: _Symbol) -> None:
        """Fold a symbol's pending single ticks into its candles."""
        pending = state.pending
        if pending:
            prices, volumes = np.array(pending[0::3], dtype=np.float64), np.array(pending[1::3], dtype=np.float64)
            stamps = np.array(pending[2::3], dtype=np.int64)
            pending.clear()
            self._merge(state, prices, volumes, stamps)

    def _merge(self, state: _Symbol, prices: np.ndarray, volumes: np.ndarray, stamps: np.ndarray) -> None:
        """Fold valid ticks (arrival order) into every interval's candles, as tick-by-tick updates would."""
        prices = prices + 0.0  # -0.0 -> 0.0, so high/low never depend on which zero came first
        self._ticks += len(stamps)
        newest = int(stamps.max())
        if state.latest_ts is None or newest > state.latest_ts:
            state.latest_ts = newest
        late = None
        for series, interval in zip(state.series, self._intervals):
            if series.watermark is not None and stamps.min() < series.watermark:
                too_old = stamps < series.watermark
                late = too_old if late is None else late | too_old
                keep = ~too_old
                _merge_series(series.candles, interval, prices[keep], volumes[keep], stamps[keep])
            else:
                _merge_series(series.candles, interval, prices, volumes, stamps)
        if late is not None:
            self._late += int(late.sum())


def _row(start: int, candle: tuple) -> tuple:
    """(candle_start_ms, open, high, low, close, volume, timestamp_ms, trade_count)."""
    return (
        start,
        candle[_OPEN],
        candle[_HIGH],
        candle[_LOW],
        candle[_CLOSE],
        candle[_VOLUME],
        candle[_LAST_TS],
        candle[_COUNT],
    )


def _merge_series(
    candles: Dict[int, tuple], interval: int, prices: np.ndarray, volumes: np.ndarray, stamps: np.ndarray
) -> None:
    if not len(stamps):
        return
    starts, group = np.unique(stamps - stamps % interval, return_inverse=True)
    groups = len(starts)
    existing = [candles.get(start) for start in starts.tolist()]

    high = np.full(groups, -np.inf)
    np.maximum.at(high, group, prices)
    low = np.full(groups, np.inf)
    np.minimum.at(low, group, prices)
    count = np.bincount(group, minlength=groups)
    # volume: start from what the candle holds and add in arrival order, so rounding matches tick by tick
    volume = np.array([c[_VOLUME] if c is not None else 0.0 for c in existing])
    np.add.at(volume, group, volumes)

    # open: the earliest tick by time (first arrival on ties); close: the latest (last arrival on ties)
    first_ts = np.full(groups, np.iinfo(np.int64).max)
    np.minimum.at(first_ts, group, stamps)
    last_ts = np.full(groups, -1, dtype=np.int64)
    np.maximum.at(last_ts, group, stamps)
    earliest = np.flatnonzero(stamps == first_ts[group])
    _, first_of_group = np.unique(group[earliest], return_index=True)
    open_price = prices[earliest[first_of_group]]
    latest = np.flatnonzero(stamps == last_ts[group])
    last_row = np.full(groups, -1, dtype=np.intp)
    np.maximum.at(last_row, group[latest], latest)
    close_price = prices[last_row]

    starts = starts.tolist()
    fresh = list(
        zip(
            open_price.tolist(),
            high.tolist(),
            low.tolist(),
            close_price.tolist(),
            volume.tolist(),
            count.tolist(),
            first_ts.tolist(),
            last_ts.tolist(),
        )
    )
    candles.update(zip(starts, fresh))  # in C; the few candles that already existed are redone below
    for i, held in enumerate(existing):
        if held is not None:
            candles[starts[i]] = _combine(held, fresh[i])


def _combine(held: tuple, new: tuple) -> tuple:
    """A held candle plus one built from later ticks (``new`` volume already includes the held volume)."""
    o, h, lo, c, v, n, first, last = new
    if first >= held[_FIRST_TS]:  # the held open is earlier, or as early and arrived first
        o, first = held[_OPEN], held[_FIRST_TS]
    if last < held[_LAST_TS]:
        c, last = held[_CLOSE], held[_LAST_TS]
    return (o, max(h, held[_HIGH]), min(lo, held[_LOW]), c, v, n + held[_COUNT], first, last)
