# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The compiled OHLC core's candles: C structs per symbol and the inline operations on them.

A symbol keeps one sorted candle array per interval and a "hot window", the
time span in which every interval's newest candle takes the tick. Inline,
so ``_ohlc.pyx`` compiles each tick's path in place, as the one-module core did;
``_Symbol`` (``_ohlc_candles.pyx``) owns one symbol's memory.
"""
from cpython.mem cimport PyMem_Realloc
from libc.stdint cimport INT64_MAX, int64_t
from libc.string cimport memmove


cdef struct CandleC:
    int64_t start
    int64_t first_ts
    int64_t last_ts
    int64_t count
    double open
    double high
    double low
    double close
    double volume


cdef struct SeriesC:
    CandleC* candles      # sorted by start
    Py_ssize_t n
    Py_ssize_t cap
    int64_t interval
    int64_t watermark     # ticks before this are late; -1 until the first flush (timestamps are >= 0)


cdef struct SymbolC:
    int64_t latest_ts    # -1 until the first tick
    SeriesC* series      # one per interval
    Py_ssize_t n_series
    int64_t hot_lo       # a tick in [hot_lo, hot_hi) lands in every series' newest candle
    int64_t hot_hi


cdef class _Symbol:
    cdef readonly str name
    cdef SymbolC c


cdef inline void _add(CandleC* c, double p, double v, int64_t t) noexcept nogil:
    if t < c.first_ts:
        c.first_ts = t
        c.open = p
    if t >= c.last_ts:  # ties: the later arrival closes
        c.last_ts = t
        c.close = p
    if p > c.high:
        c.high = p
    if p < c.low:
        c.low = p
    c.volume += v
    c.count += 1


cdef inline int _tick_into(SeriesC* s, double p, double v, int64_t t) except -1:
    """Add a tick to the candle that takes it, inserting that candle in order if new."""
    cdef int64_t start = t - t % s.interval
    cdef Py_ssize_t n = s.n, lo = n, hi = n, mid
    cdef CandleC* c
    if n and s.candles[n - 1].start == start:
        _add(&s.candles[n - 1], p, v, t)
        return 0
    if n and start < s.candles[n - 1].start:  # out of order: binary search
        lo = 0
        while lo < hi:
            mid = (lo + hi) // 2
            if s.candles[mid].start < start:
                lo = mid + 1
            else:
                hi = mid
        if s.candles[lo].start == start:
            _add(&s.candles[lo], p, v, t)
            return 0
    if n == s.cap:
        _grow(s)
    if lo < n:
        memmove(&s.candles[lo + 1], &s.candles[lo], (n - lo) * sizeof(CandleC))
    c = &s.candles[lo]
    c.start = start
    c.first_ts = t
    c.last_ts = t
    c.count = 1
    c.open = p
    c.high = p
    c.low = p
    c.close = p
    c.volume = 0.0 + v
    s.n = n + 1
    return 0


cdef inline int _grow(SeriesC* s) except -1:
    cdef Py_ssize_t cap = 8 if s.cap == 0 else s.cap * 2
    cdef CandleC* grown = <CandleC*>PyMem_Realloc(s.candles, cap * sizeof(CandleC))
    if grown == NULL:
        raise MemoryError()
    s.candles = grown
    s.cap = cap
    return 0


cdef inline void _refresh_hot(SymbolC* sym) noexcept:
    cdef Py_ssize_t k
    cdef int64_t lo = 0, hi = INT64_MAX, start, end
    cdef SeriesC* s
    for k in range(sym.n_series):
        s = &sym.series[k]
        if s.n == 0:
            sym.hot_lo, sym.hot_hi = 1, 0
            return
        start = s.candles[s.n - 1].start
        end = INT64_MAX if start > INT64_MAX - s.interval else start + s.interval
        if start > lo:
            lo = start
        if end < hi:
            hi = end
    sym.hot_lo, sym.hot_hi = lo, hi


cdef inline bint _apply(SymbolC* sym, double p, double v, int64_t t) except -1:
    """Add a valid tick to every interval; True if it was late (dropped) for any."""
    cdef Py_ssize_t k
    cdef SeriesC* s
    cdef CandleC* c
    cdef bint late = False
    if t > sym.latest_ts:
        sym.latest_ts = t
    if sym.hot_lo <= t < sym.hot_hi:
        for k in range(sym.n_series):
            s = &sym.series[k]
            _add(&s.candles[s.n - 1], p, v, t)
        return False
    for k in range(sym.n_series):
        s = &sym.series[k]
        if t < s.watermark:
            late = True
            continue
        _tick_into(s, p, v, t)
    _refresh_hot(sym)
    return late
