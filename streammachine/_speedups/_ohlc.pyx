# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Compiled OHLC core: the twin of ``streammachine/ohlc/_core_py.py``.

Candles are C structs in one sorted array per (symbol, interval); a symbol
also keeps a "hot window", the time span in which every interval's newest
candle takes the tick, so an in-order tick costs a dict lookup and a few
compares and adds (the structs and their operations: ``_ohlc_candles.pxd``). Anything unusual (a new symbol, a bad value, a late or
out-of-order tick) takes a slower path; the validation rules and error
messages come from ``streammachine.ohlc.ticks``, shared with the Python twin.
"""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.dict cimport PyDict_GetItem
from cpython.float cimport PyFloat_AS_DOUBLE
from cpython.ref cimport Py_INCREF, Py_XDECREF, PyObject
from libc.math cimport isfinite
from libc.stdint cimport int64_t, uint8_t, uint64_t
from libc.string cimport memmove

import numpy as np

from streammachine.ohlc.ticks import (
    coerce_symbol, coerce_tick, normalise_intervals, parse_field_number, prepare_tick_arrays, both_spellings,
)
from streammachine.redis.entries import iter_stream_batches, parse_stream_id_timestamp

from streammachine._speedups._ohlc_candles cimport CandleC, SeriesC, SymbolC, _Symbol, _apply, _grow, _refresh_hot
from streammachine._speedups._text cimport text_double, text_millis

cdef extern from "Python.h":
    long long PyLong_AsLongLongAndOverflow(object obj, int* overflow) except? -1


cdef int64_t _entry_millis(object entry_id) except -2:
    if type(entry_id) is bytes or type(entry_id) is str:
        return text_millis(entry_id, True)
    try:
        return parse_stream_id_timestamp(entry_id)
    except ValueError:
        return -1


cdef bint _parse_number(object raw, double* out) except -1:
    """``float(raw)`` semantics; bytes take a C fast path. False if it does not parse."""
    if type(raw) is bytes and text_double(PyBytes_AS_STRING(raw), PyBytes_GET_SIZE(raw), out):
        return True
    # whitespace, underscores, junk: let float() decide, as the Python core does
    number = parse_field_number(raw)
    if number is None:
        return False
    out[0] = number
    return True


cdef inline object _field(object fields, object bytes_key, object str_key):
    cdef PyObject* found
    if type(fields) is dict:
        found = PyDict_GetItem(fields, bytes_key)
        if found == NULL:
            found = PyDict_GetItem(fields, str_key)
        return None if found == NULL else <object>found
    value = fields.get(bytes_key)
    return fields.get(str_key) if value is None else value


cdef class OHLCCore:
    """Candle state and the update paths; the read API comes from ``OHLCMethods``."""

    cdef tuple _intervals
    cdef dict _states        # str and bytes spellings -> _Symbol
    cdef list _names         # first-seen order
    cdef Py_ssize_t _ticks, _late, _rejected
    # update_tick's identity cache: symbol object (a strong reference) -> its state. Callers pass the
    # same few symbol objects again and again; this skips the dict lookup, a fifth of a tick's cost.
    cdef PyObject* _recent_keys[256]
    cdef SymbolC* _recent_states[256]

    def __cinit__(self):
        cdef int i
        for i in range(256):
            self._recent_keys[i] = NULL

    def __init__(self, intervals=None):
        self._intervals = normalise_intervals(intervals)
        self.clear()

    def __dealloc__(self):
        self._forget_recent()

    cdef void _forget_recent(self) noexcept:
        cdef int i
        for i in range(256):
            Py_XDECREF(self._recent_keys[i])
            self._recent_keys[i] = NULL

    def clear(self):
        """Forget every candle, symbol and counter."""
        self._forget_recent()  # before the states its pointers lead to go away
        self._states = {}
        self._names = []
        self._ticks = self._late = self._rejected = 0

    @property
    def intervals(self):
        return self._intervals

    @property
    def tick_count(self):
        """Valid ticks taken (late ones included)."""
        return self._ticks

    @property
    def late_ticks(self):
        """Ticks that fell in a candle already flushed for some interval (dropped there)."""
        return self._late

    @property
    def rejected(self):
        """Ticks refused as invalid (bad price, volume, timestamp, symbol or entry)."""
        return self._rejected

    @property
    def symbols(self):
        """Symbols seen, in first-seen order."""
        return list(self._names)

    def latest_timestamp(self, symbol):
        cdef _Symbol sym = self._find(symbol)
        if sym is None or sym.c.latest_ts < 0:
            return None
        return sym.c.latest_ts

    # -- updates -------------------------------------------------------------

    def update_tick(self, symbol, price, volume, timestamp_ms):
        """Add one trade. Raises ValueError (naming the field) for a bad one."""
        cdef double p, v
        cdef long long t
        cdef int overflow = 0
        cdef PyObject* key = <PyObject*>symbol
        cdef PyObject* found
        cdef SymbolC* state
        cdef size_t slot
        if type(price) is float and type(volume) is float and type(timestamp_ms) is int:
            p = PyFloat_AS_DOUBLE(price)
            v = PyFloat_AS_DOUBLE(volume)
            t = PyLong_AsLongLongAndOverflow(timestamp_ms, &overflow)
            if isfinite(p) and isfinite(v) and v >= 0.0 and t >= 0 and overflow == 0:
                slot = (<uint64_t><size_t>key * 11400714819323198485ULL) >> 56  # Fibonacci hash to 8 bits
                if self._recent_keys[slot] == key:
                    state = self._recent_states[slot]
                elif type(symbol) is str or type(symbol) is bytes:
                    found = PyDict_GetItem(self._states, symbol)
                    if found == NULL:
                        self._update_tick_checked(symbol, price, volume, timestamp_ms)
                        return
                    state = &(<_Symbol>found).c
                    Py_INCREF(symbol)
                    Py_XDECREF(self._recent_keys[slot])
                    self._recent_keys[slot] = key
                    self._recent_states[slot] = state
                else:
                    self._update_tick_checked(symbol, price, volume, timestamp_ms)
                    return
                if _apply(state, p + 0.0, v + 0.0, t):
                    self._late += 1
                self._ticks += 1
                return
        self._update_tick_checked(symbol, price, volume, timestamp_ms)

    cdef _update_tick_checked(self, symbol, price, volume, timestamp_ms):
        try:
            name, p, v, t = coerce_tick(symbol, price, volume, timestamp_ms)
        except ValueError:
            self._rejected += 1
            raise
        if _apply(&self._state_for(name).c, p, v, t):
            self._late += 1
        self._ticks += 1

    def process_stream_batch(self, entries, price_field="price", volume_field="volume", symbol_field="symbol"):
        """Take ticks from a read reply (RESP2/RESP3) or a list of (id, fields); time is the id's ms.

        A tick without ``symbol_field`` belongs to its stream (``ticks:AAPL``
        gives the symbol ``ticks:AAPL``; a bare list of entries has no stream
        name, so such a tick is rejected); one without ``volume_field`` has
        volume 0. Bad rows are skipped and counted in ``rejected``; returns the
        number taken.
        """
        cdef object price_str, price_bytes, volume_str, volume_bytes, symbol_str, symbol_bytes
        cdef object entry_id, fields, raw_symbol, stream
        cdef double p, v
        cdef int64_t t
        cdef Py_ssize_t taken = 0
        cdef _Symbol sym
        price_str, price_bytes = both_spellings(price_field)
        volume_str, volume_bytes = both_spellings(volume_field)
        symbol_str, symbol_bytes = both_spellings(symbol_field)
        for stream, batch in iter_stream_batches(entries):
            for entry in batch:
                if not isinstance(entry, (tuple, list)) or len(entry) != 2:
                    self._rejected += 1
                    continue
                entry_id, fields = entry
                t = _entry_millis(entry_id)
                if t < 0 or (type(fields) is not dict and not hasattr(fields, "get")):
                    self._rejected += 1
                    continue
                try:
                    raw_price = _field(fields, price_bytes, price_str)
                    raw_volume = _field(fields, volume_bytes, volume_str)
                    raw_symbol = _field(fields, symbol_bytes, symbol_str)
                except (TypeError, AttributeError, ValueError):
                    self._rejected += 1
                    continue
                if raw_volume is None:
                    v = 0.0
                elif not _parse_number(raw_volume, &v):
                    self._rejected += 1
                    continue
                if not _parse_number(raw_price, &p) or not isfinite(p) or not isfinite(v) or v < 0.0:
                    self._rejected += 1
                    continue
                sym = self._lookup_or_create(stream if raw_symbol is None else raw_symbol)
                if sym is None:
                    self._rejected += 1
                    continue
                if _apply(&sym.c, p + 0.0, v + 0.0, t):
                    self._late += 1
                self._ticks += 1
                taken += 1
        return taken

    def update_arrays(self, symbols, prices, volumes, timestamps_ms):
        """Add many ticks at once (arrays in arrival order); ``symbols`` may be one symbol for all.

        Bad rows are skipped and counted in ``rejected``; returns the number taken.
        """
        symbols, prices_a, volumes_a, stamps_a, valid_a = prepare_tick_arrays(symbols, prices, volumes, timestamps_ms)
        cdef const double[::1] p = np.ascontiguousarray(prices_a)
        cdef const double[::1] v = np.ascontiguousarray(volumes_a)
        cdef const int64_t[::1] t = np.ascontiguousarray(stamps_a)
        cdef const uint8_t[::1] valid = np.ascontiguousarray(valid_a).view(np.uint8)
        cdef Py_ssize_t i, n = p.shape[0], taken = 0, rejected = 0, late = 0
        cdef size_t slot
        cdef _Symbol sym
        cdef SymbolC* state = NULL
        cdef PyObject** items
        cdef PyObject* key
        # per-call cache keyed by object identity (the array keeps its elements alive for the call);
        # symbols repeat, so most rows skip the dict lookup
        cdef PyObject* cache_keys[1024]
        cdef SymbolC* cache_states[1024]
        if isinstance(symbols, (str, bytes)):
            sym = self._lookup_or_create(symbols)
            if sym is None:
                self._rejected += n
                return 0
            state = &sym.c
            for i in range(n):
                if not valid[i]:
                    rejected += 1
                    continue
                late += _apply(state, p[i], v[i], t[i])
                taken += 1
        else:
            column = np.ascontiguousarray(symbols, dtype=object)
            items = <PyObject**><size_t>column.__array_interface__["data"][0]
            for i in range(1024):
                cache_keys[i] = NULL
            for i in range(n):
                if not valid[i]:
                    rejected += 1
                    continue
                key = items[i]
                slot = (<uint64_t><size_t>key * 11400714819323198485ULL) >> 54  # Fibonacci hash to 10 bits
                if cache_keys[slot] == key:
                    state = cache_states[slot]
                else:
                    sym = self._lookup_or_create(<object>key)
                    if sym is None:
                        rejected += 1
                        continue
                    state = &sym.c  # sym is kept alive by self._states
                    cache_keys[slot] = key
                    cache_states[slot] = state
                late += _apply(state, p[i], v[i], t[i])
                taken += 1
        self._ticks += taken
        self._rejected += rejected
        self._late += late
        return taken

    # -- reading (used by OHLCMethods) ---------------------------------------

    def _rows(self, symbol, Py_ssize_t index, before):
        cdef _Symbol sym = self._find(symbol)
        cdef Py_ssize_t i
        cdef SeriesC* s
        cdef CandleC* c
        cdef bint bounded = before is not None
        cdef int64_t limit = before if bounded else 0
        if sym is None:
            return []
        s = &sym.c.series[index]
        rows = []
        for i in range(s.n):
            c = &s.candles[i]
            if bounded and c.start >= limit:
                break
            rows.append((c.start, c.open, c.high, c.low, c.close, c.volume, c.last_ts, c.count))
        return rows

    def _flush(self, symbol, Py_ssize_t index, int64_t before):
        cdef _Symbol sym = self._find(symbol)
        cdef SeriesC* s
        cdef Py_ssize_t gone
        if sym is None:
            return []
        rows = self._rows(symbol, index, before)
        s = &sym.c.series[index]
        gone = len(rows)
        if gone:
            memmove(&s.candles[0], &s.candles[gone], (s.n - gone) * sizeof(CandleC))
            s.n -= gone
        if before > s.watermark:
            s.watermark = before
        _refresh_hot(&sym.c)
        return rows

    # -- snapshots (the format is in streammachine/ohlc/snapshot.py) -----------

    def _export(self):
        """[(name, latest_ts or None, [(watermark or None, [row, ...]) per interval]), ...], first-seen order.

        A row: (start, open, high, low, close, volume, trade_count, first_ts, last_ts).
        """
        cdef _Symbol sym
        cdef SeriesC* s
        cdef CandleC* c
        cdef Py_ssize_t k, i
        out = []
        for name in self._names:
            sym = self._states[name]
            series = []
            for k in range(sym.c.n_series):
                s = &sym.c.series[k]
                rows = []
                for i in range(s.n):
                    c = &s.candles[i]
                    rows.append((c.start, c.open, c.high, c.low, c.close, c.volume, c.count, c.first_ts, c.last_ts))
                series.append((None if s.watermark < 0 else s.watermark, rows))
            out.append((name, None if sym.c.latest_ts < 0 else sym.c.latest_ts, series))
        return out

    def _load(self, list symbols, ticks, late, rejected):
        """Replace the state with checked ``_export`` data (see snapshot.parse)."""
        cdef _Symbol sym
        cdef SeriesC* s
        cdef CandleC* c
        cdef Py_ssize_t k, i, n
        self.clear()
        for name, latest, series in symbols:
            sym = self._state_for(name)
            sym.c.latest_ts = -1 if latest is None else latest
            for k in range(sym.c.n_series):
                watermark, rows = series[k]
                s = &sym.c.series[k]
                s.watermark = -1 if watermark is None else watermark
                n = len(rows)
                while s.cap < n:
                    _grow(s)
                for i in range(n):
                    c = &s.candles[i]
                    (c.start, c.open, c.high, c.low, c.close, c.volume, c.count, c.first_ts, c.last_ts) = rows[i]
                s.n = n
            _refresh_hot(&sym.c)
        self._ticks, self._late, self._rejected = ticks, late, rejected

    # -- state ---------------------------------------------------------------

    cdef _Symbol _find(self, symbol):
        if not isinstance(symbol, (str, bytes)):
            coerce_symbol(symbol)  # raises the ValueError naming it
        return self._states.get(symbol)

    cdef _Symbol _lookup_or_create(self, symbol):
        """The state for a symbol from a batch, or None when it is not a valid symbol."""
        cdef PyObject* found = NULL
        if type(symbol) is str or type(symbol) is bytes:
            found = PyDict_GetItem(self._states, symbol)
            if found != NULL:
                return <_Symbol>found
        try:
            return self._state_for(coerce_symbol(symbol))
        except (ValueError, TypeError):
            return None

    cdef _Symbol _state_for(self, str name):
        cdef _Symbol sym = self._states.get(name)
        if sym is None:
            sym = _Symbol(name, self._intervals)
            for key in both_spellings(name):
                self._states[key] = sym
            self._names.append(name)
        return sym
