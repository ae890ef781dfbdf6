# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The window cores' C layout: 8-byte slots, aggregate ops, growable tables of rows, the plan's codes.

A record is a row of slots ``[n, doubles..., times...]`` (the Python
record's layout). Everything here is inline, so each module that cimports it
compiles the same code the one-module core had: no call crosses a module.
"""
from cpython.mem cimport PyMem_Realloc
from libc.stdint cimport INT64_MAX, int64_t
from libc.string cimport memmove


ctypedef union Slot:
    double f
    int64_t i

cdef struct Op:
    int op
    int slot
    int slot2
    int f1
    int f2

cdef struct Table:
    Slot* data
    Py_ssize_t head
    Py_ssize_t end
    Py_ssize_t cap
    Py_ssize_t stride

# the op codes of streammachine.windows.aggregates and the kinds of spec (checked in WindowMachine.__init__)
cdef enum:
    OP_SUM = 0
    OP_PSUM = 1
    OP_MIN = 2
    OP_MAX = 3
    OP_FIRST = 4
    OP_LAST = 5
    OP_WELFORD = 6

cdef enum:
    R_COUNT = 0
    R_VALUE = 1
    R_DIV = 2
    R_MEAN = 3
    R_VAR = 4
    R_STD = 5
    R_TIME = 6

cdef enum:
    K_BUCKETS = 0
    K_SESSION = 1
    K_SLIDE_TIME = 2
    K_SLIDE_COUNT = 3
    K_BARS = 4

cdef enum:
    M_COUNT = 0
    M_FIELD = 1


# -- tables: rows [head, end) of `stride` slots; indices below are relative to head ---------------

cdef inline Py_ssize_t _len(Table* t) noexcept nogil:
    return t.end - t.head

cdef inline Slot* _at(Table* t, Py_ssize_t i) noexcept nogil:
    return t.data + (t.head + i) * t.stride

cdef inline int _reserve(Table* t, Py_ssize_t rows) except -1:
    cdef Py_ssize_t cap
    cdef Slot* grown
    if t.end + rows <= t.cap:
        return 0
    if t.head > 0 and t.head * 2 >= t.end:  # most rows left at the front: slide down instead of growing
        memmove(t.data, t.data + t.head * t.stride, (t.end - t.head) * t.stride * sizeof(Slot))
        t.end -= t.head
        t.head = 0
        if t.end + rows <= t.cap:
            return 0
    cap = t.cap * 2 if t.cap else 8
    if cap < t.end + rows:
        cap = t.end + rows
    grown = <Slot*>PyMem_Realloc(t.data, cap * t.stride * sizeof(Slot))
    if grown == NULL:
        raise MemoryError()
    t.data = grown
    t.cap = cap
    return 0

cdef inline Slot* _insert(Table* t, Py_ssize_t i) except NULL:
    _reserve(t, 1)
    cdef Slot* at = t.data + (t.head + i) * t.stride
    if t.head + i < t.end:
        memmove(at + t.stride, at, (t.end - t.head - i) * t.stride * sizeof(Slot))
    t.end += 1
    return at

cdef inline void _remove(Table* t, Py_ssize_t i) noexcept:
    cdef Slot* at = t.data + (t.head + i) * t.stride
    if i == 0:
        t.head += 1
    else:
        memmove(at, at + t.stride, (t.end - t.head - i - 1) * t.stride * sizeof(Slot))
        t.end -= 1
    if t.head == t.end:
        t.head = t.end = 0

cdef inline void _init_table(Table* t, Py_ssize_t stride) noexcept:
    t.data = NULL
    t.head = t.end = t.cap = 0
    t.stride = stride

cdef inline int64_t _sat(int64_t a, int64_t b) noexcept nogil:
    """a + b, saturating at INT64_MAX (b >= 0); the Python core saturates the same way."""
    if a > INT64_MAX - b:
        return INT64_MAX
    return a + b
