# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""One symbol's candle memory for the compiled OHLC core (the structs and operations are ``_ohlc_candles.pxd``)."""
from cpython.mem cimport PyMem_Free, PyMem_Malloc

from streammachine._speedups._ohlc_candles cimport SeriesC


cdef class _Symbol:
    """Owns one symbol's candles (``c``); the hot paths work on ``&c`` with no Python objects."""

    def __cinit__(self, str name, tuple intervals):
        cdef Py_ssize_t k
        self.name = name
        self.c.latest_ts = -1
        self.c.n_series = len(intervals)
        self.c.series = <SeriesC*>PyMem_Malloc(self.c.n_series * sizeof(SeriesC))
        if self.c.series == NULL:
            raise MemoryError()
        for k in range(self.c.n_series):
            self.c.series[k].candles = NULL
            self.c.series[k].n = 0
            self.c.series[k].cap = 0
            self.c.series[k].interval = intervals[k]
            self.c.series[k].watermark = -1
        self.c.hot_lo, self.c.hot_hi = 1, 0

    def __dealloc__(self):
        cdef Py_ssize_t k
        if self.c.series != NULL:
            for k in range(self.c.n_series):
                PyMem_Free(self.c.series[k].candles)
            PyMem_Free(self.c.series)
