# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Aggregate records: one entry into a record, two records into one (the Python core's order of float ops).

Inline, so the state machine's every update compiles in place.
"""
from libc.stdint cimport int64_t
from libc.string cimport memcpy

from streammachine._speedups._window_tables cimport (
    OP_FIRST, OP_LAST, OP_MAX, OP_MIN, OP_PSUM, OP_SUM, OP_WELFORD, Op, Slot,
)


cdef inline void record_update(const Op* ops, Py_ssize_t nops, Slot* r, int64_t ts, const double* x) noexcept:
    cdef int64_t count = r[0].i + 1
    cdef Py_ssize_t k
    cdef const Op* op
    cdef double value, delta
    for k in range(nops):
        op = &ops[k]
        value = x[op.f1]
        if op.op == OP_SUM:
            r[op.slot].f += value
        elif op.op == OP_PSUM:
            r[op.slot].f += value * x[op.f2]
        elif op.op == OP_MIN:
            if value < r[op.slot].f:
                r[op.slot].f = value
        elif op.op == OP_MAX:
            if value > r[op.slot].f:
                r[op.slot].f = value
        elif op.op == OP_FIRST:
            if ts < r[op.slot2].i:
                r[op.slot2].i = ts
                r[op.slot].f = value
        elif op.op == OP_LAST:
            if ts >= r[op.slot2].i:
                r[op.slot2].i = ts
                r[op.slot].f = value
        elif op.op == OP_WELFORD:
            delta = value - r[op.slot].f
            r[op.slot].f += delta / <double>count
            r[op.slot + 1].f += delta * (value - r[op.slot].f)
    r[0].i = count


cdef inline void record_merge(
    const Op* ops, Py_ssize_t nops, Py_ssize_t record, Slot* dst, const Slot* older, const Slot* newer
) noexcept:
    """dst = older and newer combined (dst may be older); ties: first from older, last from newer."""
    cdef int64_t n_old = older[0].i, n_new = newer[0].i, count = n_old + n_new
    cdef Py_ssize_t k
    cdef const Op* op
    cdef double delta
    if dst != older:
        memcpy(dst, older, record * sizeof(Slot))
    for k in range(nops):
        op = &ops[k]
        if op.op == OP_SUM or op.op == OP_PSUM:
            dst[op.slot].f = older[op.slot].f + newer[op.slot].f
        elif op.op == OP_MIN:
            if newer[op.slot].f < older[op.slot].f:
                dst[op.slot].f = newer[op.slot].f
        elif op.op == OP_MAX:
            if newer[op.slot].f > older[op.slot].f:
                dst[op.slot].f = newer[op.slot].f
        elif op.op == OP_FIRST:
            if newer[op.slot2].i < older[op.slot2].i:
                dst[op.slot2].i = newer[op.slot2].i
                dst[op.slot].f = newer[op.slot].f
        elif op.op == OP_LAST:
            if newer[op.slot2].i >= older[op.slot2].i:
                dst[op.slot2].i = newer[op.slot2].i
                dst[op.slot].f = newer[op.slot].f
        elif op.op == OP_WELFORD:
            if n_new == 0:
                continue
            if n_old == 0:
                dst[op.slot].f = newer[op.slot].f
                dst[op.slot + 1].f = newer[op.slot + 1].f
                continue
            delta = newer[op.slot].f - older[op.slot].f
            dst[op.slot].f = older[op.slot].f + delta * <double>n_new / <double>count
            dst[op.slot + 1].f = (older[op.slot + 1].f + newer[op.slot + 1].f
                                  + delta * delta * <double>n_old * <double>n_new / <double>count)
    dst[0].i = count
