# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The compiled window state machine's declarations, for the modules that build on it.

``_windows.pyx`` subclasses ``WindowMachine`` (entries in, rows out) and
``_window_snapshot.pyx`` reads and rebuilds its state; both reach these
fields and methods directly, as the one-module core did.
"""
from libc.stdint cimport int64_t

from streammachine._speedups._window_tables cimport Op, Slot, Table


cdef class _Key:
    cdef readonly str name
    cdef Py_ssize_t index
    cdef int64_t clock, sealed, bar_start, bar_end
    cdef double measure
    cdef Table windows   # buckets: (start, record); session: (start, end, record)
    cdef Table pending   # (ts, values)
    cdef Table buffer    # sliding: (ts, values) in the window
    cdef Table front     # sliding: suffix aggregates of buffer[:front_count]
    cdef Py_ssize_t front_count
    cdef Slot* back
    cdef bint has_back
    cdef Slot* bar
    cdef bint has_bar


cdef class WindowMachine:
    cdef readonly object window
    cdef public Py_ssize_t _rejected
    cdef Py_ssize_t _entries, _late
    cdef int _kind, _measure, _mf1, _mf2
    cdef bint _final
    cdef int64_t _size, _step, _gap, _count, _grace, _floor
    cdef double _threshold
    cdef Py_ssize_t _nfields, _record, _nops
    cdef Op* _ops
    cdef Slot* _blank
    cdef Slot* _scratch
    cdef double* _x
    cdef double* _x2
    cdef dict _keys          # key name (str) -> _Key
    cdef dict _keys_bytes    # the same keys spelled as UTF-8 bytes (a separate dict: see _windows._get)
    cdef list _names
    cdef list _states

    cdef bint _apply(self, _Key key, int64_t ts, const double* x) except -1
    cdef int _close(self, _Key key, int64_t watermark) except -1
    cdef bint _add_buckets(self, _Key key, int64_t ts, const double* x, int64_t watermark) except -1
    cdef bint _add_session(self, _Key key, int64_t ts, const double* x, int64_t watermark) except -1
    cdef int _release(self, _Key key, int64_t watermark) except -1
    cdef int _slide(self, _Key key, int64_t ts, const double* x) except -1
    cdef int _pop_front(self, _Key key) except -1
    cdef void _suffixes(self, _Key key, Py_ssize_t count) noexcept
    cdef int _bar(self, _Key key, int64_t ts, const double* x) except -1
    cdef int _emit(self, _Key key, int64_t start, int64_t end, const Slot* r) except -1
    cdef _Key _key_for(self, str name)
