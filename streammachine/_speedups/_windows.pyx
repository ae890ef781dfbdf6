# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Compiled window core: the twin of ``streammachine/windows/_core_py.py``.

Same algorithms and the same order of float operations as the Python core
(the parity tests hold them to it, snapshots included). Records are rows of
8-byte slots (``[n, doubles..., times...]``, the Python record's layout) in
growable tables per key, so an entry in order costs a dict lookup and a few
slot updates. Custom reducers (Python objects per window) are not here:
windows that have them run on the Python core. Validation and error
messages come from ``streammachine.windows.values``, shared with the twin:
anything unusual in an entry takes that slower path.
"""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.dict cimport PyDict_GetItem
from cpython.float cimport PyFloat_AS_DOUBLE
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from cpython.ref cimport PyObject
from libc.math cimport NAN, isfinite, sqrt
from libc.stdint cimport INT64_MAX, INT64_MIN, int64_t, uint8_t, uint64_t
from libc.string cimport memcpy, memmove

import numpy as np

from streammachine.redis.entries import as_text
from streammachine.windows.values import EntryReader, key_name

from streammachine._speedups._text cimport PyUnicode_AsUTF8AndSize, text_double, text_millis

cdef extern from "Python.h":
    long long PyLong_AsLongLongAndOverflow(object obj, int* overflow) except? -1

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

# the op codes of streammachine.windows.aggregates and the kinds of spec (checked in WindowCore.__init__)
DEF OP_SUM = 0
DEF OP_PSUM = 1
DEF OP_MIN = 2
DEF OP_MAX = 3
DEF OP_FIRST = 4
DEF OP_LAST = 5
DEF OP_WELFORD = 6
DEF R_COUNT = 0
DEF R_VALUE = 1
DEF R_DIV = 2
DEF R_MEAN = 3
DEF R_VAR = 4
DEF R_STD = 5
DEF R_TIME = 6
DEF K_BUCKETS = 0
DEF K_SESSION = 1
DEF K_SLIDE_TIME = 2
DEF K_SLIDE_COUNT = 3
DEF K_BARS = 4
DEF M_COUNT = 0
DEF M_FIELD = 1


# -- tables: rows [head, end) of `stride` slots; indices below are relative to head ---------------

cdef inline Py_ssize_t _len(Table* t) noexcept nogil:
    return t.end - t.head

cdef inline Slot* _at(Table* t, Py_ssize_t i) noexcept nogil:
    return t.data + (t.head + i) * t.stride

cdef int _reserve(Table* t, Py_ssize_t rows) except -1:
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

cdef Slot* _insert(Table* t, Py_ssize_t i) except NULL:
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


cdef class _Key:
    """One key's state; tables by kind (see the Python core's _Key)."""
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

    def __cinit__(self, str name, Py_ssize_t index, int kind, Py_ssize_t record, Py_ssize_t fields):
        self.name = name
        self.index = index
        self.clock = -1
        self.sealed = INT64_MIN
        _init_table(&self.windows, record + (2 if kind == K_SESSION else 1))
        _init_table(&self.pending, 1 + fields)
        _init_table(&self.buffer, 1 + fields)
        _init_table(&self.front, record)
        self.back = <Slot*>PyMem_Malloc(record * sizeof(Slot))
        self.bar = <Slot*>PyMem_Malloc(record * sizeof(Slot))
        if self.back == NULL or self.bar == NULL:
            raise MemoryError()

    def __dealloc__(self):
        PyMem_Free(self.windows.data)
        PyMem_Free(self.pending.data)
        PyMem_Free(self.buffer.data)
        PyMem_Free(self.front.data)
        PyMem_Free(self.back)
        PyMem_Free(self.bar)


cdef inline object _get(dict fields, object spelled_bytes, object spelled_str, bint text_first):
    """fields[name] in either spelling, or None. The spelling that matched last is tried first: a str and
    a bytes name hash the same, so the other spelling's miss costs a failed str/bytes comparison."""
    cdef PyObject* found
    if text_first:
        found = PyDict_GetItem(fields, spelled_str)
        if found == NULL:
            found = PyDict_GetItem(fields, spelled_bytes)
    else:
        found = PyDict_GetItem(fields, spelled_bytes)
        if found == NULL:
            found = PyDict_GetItem(fields, spelled_str)
    if found == NULL:
        return None
    return <object>found


cdef double[23] _POW10 = [1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                          1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22]


cdef inline bint _plain_decimal(const char* text, Py_ssize_t size, double* out) noexcept nogil:
    """A plain decimal ("-12.345", at most 15 digits, no exponent), as float() reads it; False otherwise.

    m / 10**k with m < 2**53 and k <= 22 is one division of two exact doubles, so it is correctly
    rounded: the same double float() returns (the classic exact fast path of decimal conversion).
    """
    cdef Py_ssize_t i = 0
    cdef int64_t mantissa = 0
    cdef int digits = 0, scale = -1, digit
    cdef bint negative = False
    cdef double value
    if size and (text[0] == 45 or text[0] == 43):  # '-' '+'
        negative = text[0] == 45
        i = 1
    while i < size:
        if text[i] == 46:  # '.'
            if scale >= 0:
                return False
            scale = 0
        else:
            digit = text[i] - 48
            if digit < 0 or digit > 9 or digits == 15:
                return False
            mantissa = mantissa * 10 + digit
            digits += 1
            if scale >= 0:
                scale += 1
        i += 1
    if digits == 0:
        return False
    value = <double>mantissa
    if scale > 0:
        value = value / _POW10[scale]
    out[0] = -value if negative else value
    return True


cdef bint _number(object raw, double* out) except -1:
    """The fast cases of values.number(); False sends the entry to the checked path."""
    cdef const char* text
    cdef double value
    cdef Py_ssize_t size
    if type(raw) is float:
        value = PyFloat_AS_DOUBLE(raw)
    elif type(raw) is bytes:
        text = PyBytes_AS_STRING(raw)
        size = PyBytes_GET_SIZE(raw)
        if not _plain_decimal(text, size, &value) and not text_double(text, size, &value):
            return False
    elif type(raw) is str and (<str>raw).isascii():
        text = PyUnicode_AsUTF8AndSize(raw, &size)
        if not _plain_decimal(text, size, &value):
            return False
    elif type(raw) is int:
        value = float(raw)
    else:
        return False
    if not isfinite(value):
        return False
    out[0] = value + 0.0
    return True


cdef class WindowCore:
    """Window state and the update paths; the public API comes from ``WindowMethods``."""

    cdef readonly object window
    cdef readonly object _reader
    cdef public Py_ssize_t _rejected
    cdef public Py_ssize_t _slow_reads  # entries that took the checked path (the parity tests look)
    cdef Py_ssize_t _entries, _late
    cdef int _kind, _measure, _mf1, _mf2
    cdef bint _final
    cdef int64_t _size, _step, _gap, _count, _grace, _floor
    cdef double _threshold
    cdef Py_ssize_t _nfields, _record, _nops, _nres
    cdef Op* _ops
    cdef Op* _res
    cdef Slot* _blank
    cdef Slot* _scratch
    cdef double* _x
    cdef double* _x2
    cdef list _out_arrays    # emitted rows as numpy columns: key index, start, end, one per result
    cdef Slot** _out_ptr     # their data (int64 and float64 are both 8 bytes: one Slot each)
    cdef Py_ssize_t _out_n, _out_cap
    cdef list _out_dtypes
    cdef dict _keys          # key name (str) -> _Key
    cdef dict _keys_bytes    # the same keys spelled as UTF-8 bytes (a separate dict: see _get)
    cdef list _names
    cdef list _states
    cdef tuple _row_names
    cdef object _key_field, _time_field, _key_bytes, _time_bytes
    cdef list _field_names, _field_bytes
    cdef bint _text_first

    def __init__(self, window):
        plan = window.plan
        if plan["customs"]:
            raise ValueError("custom reducers (Reduce) run on the Python core: use PythonWindowState")
        from streammachine.windows import aggregates as A, spec as S
        assert (A.OP_SUM, A.OP_PSUM, A.OP_WELFORD, A.R_TIME, S.K_BARS, S.M_FIELD) == (0, 1, 6, 6, 4, 1)
        self.window = window
        self._reader = EntryReader(plan)
        self._kind = plan["kind"]
        self._size, self._step, self._gap, self._count = plan["size"], plan["step"], plan["gap"], plan["count"]
        self._measure, self._threshold = plan["measure"], plan["threshold"]
        self._mf1, self._mf2 = plan["measure_fields"]
        self._grace, self._final = plan["grace"], plan["final"]
        self._nfields = len(plan["fields"])
        self._record = 1 + len(plan["d_init"]) + len(plan["t_init"])
        self._nops = len(plan["updates"])
        self._nres = len(plan["results"])
        self._ops = <Op*>PyMem_Malloc((self._nops + 1) * sizeof(Op))
        self._res = <Op*>PyMem_Malloc((self._nres + 1) * sizeof(Op))
        self._blank = <Slot*>PyMem_Malloc(self._record * sizeof(Slot))
        self._scratch = <Slot*>PyMem_Malloc(self._record * sizeof(Slot))
        self._x = <double*>PyMem_Malloc((self._nfields + 1) * sizeof(double))
        self._x2 = <double*>PyMem_Malloc((self._nfields + 1) * sizeof(double))
        if not (self._ops and self._res and self._blank and self._scratch and self._x and self._x2):
            raise MemoryError()
        cdef Py_ssize_t k
        for k, (op, slot, slot2, f1, f2) in enumerate(plan["updates"]):
            self._ops[k].op, self._ops[k].slot, self._ops[k].slot2 = op, slot, slot2
            self._ops[k].f1, self._ops[k].f2 = f1, f2
        for k, (op, slot, arg) in enumerate(plan["results"]):
            self._res[k].op, self._res[k].slot, self._res[k].slot2 = op, slot, arg
        self._blank[0].i = 0
        for k, value in enumerate(plan["d_init"]):
            self._blank[1 + k].f = value
        for k, value in enumerate(plan["t_init"]):
            self._blank[1 + len(plan["d_init"]) + k].i = value
        self._out_ptr = <Slot**>PyMem_Malloc((3 + self._nres) * sizeof(Slot*))
        if self._out_ptr == NULL:
            raise MemoryError()
        self._out_dtypes = [np.int64, np.int64, np.int64] + [
            np.int64 if op in (R_COUNT, R_TIME) else np.float64 for op, _, _ in plan["results"]
        ]
        self._out_arrays = None
        self._out_n = self._out_cap = 0
        self._row_names = ("key", "start", "end") + plan["columns"]
        self._key_field = plan["key"]
        self._time_field = plan["time"]
        self._key_bytes = None if self._key_field is None else self._key_field.encode("utf-8")
        self._time_bytes = self._time_field.encode("utf-8")
        self._field_names = list(plan["fields"])
        self._field_bytes = [name.encode("utf-8") for name in plan["fields"]]
        self.clear()

    def __dealloc__(self):
        PyMem_Free(self._ops)
        PyMem_Free(self._res)
        PyMem_Free(self._blank)
        PyMem_Free(self._scratch)
        PyMem_Free(self._x)
        PyMem_Free(self._x2)
        PyMem_Free(self._out_ptr)

    def clear(self):
        """Forget every key, window and counter."""
        self._keys = {}
        self._keys_bytes = {}
        self._names = []
        self._states = []
        self._floor = INT64_MIN
        self._entries = self._late = self._rejected = 0
        self._out_n = 0

    @property
    def entries(self):
        """Entries taken (late ones included)."""
        return self._entries

    @property
    def late(self):
        """Entries that belonged to something already closed (not counted there)."""
        return self._late

    @property
    def rejected(self):
        """Entries refused as invalid (bad key, time or value)."""
        return self._rejected

    @property
    def keys(self):
        """Keys seen, in first-seen order."""
        return list(self._names)

    # -- input paths -----------------------------------------------------------

    def add(self, fields, id=None, stream=None):
        """Take one entry; returns the rows it made emit. A bad entry raises ValueError (and is counted)."""
        self._entry(fields, id, stream)
        if self._out_n == 0:
            return []
        return self._rows()

    def _add_one(self, fields, entry_id, stream):
        """Take one entry; True if it was late. A bad one raises ValueError (counted in ``rejected``)."""
        return self._entry(fields, entry_id, stream)

    def _add_pairs(self, list entries, stream, list late, list bad):
        """A read's ``(id, fields)`` pairs in order, all from ``stream``: late ids go to ``late``, bad entries
        to ``bad`` as (position, id, error, counted) (the window stage's path: no Message, no Python loop)."""
        cdef Py_ssize_t i
        for i in range(len(entries)):
            entry = entries[i]
            entry_id = entry[0]
            try:
                if self._entry(entry[1], entry_id, stream):
                    late.append(entry_id)
            except (ValueError, TypeError) as exc:
                bad.append((i, entry_id, str(exc), isinstance(exc, ValueError)))

    cdef bint _entry(self, fields, entry_id, stream) except -1:
        cdef int64_t ts = -1
        cdef _Key key = self._read_fast(fields, entry_id, stream, &ts)
        if key is None:
            self._slow_reads += 1
            try:
                name, ts, values = self._reader.read(fields, entry_id, stream)
            except ValueError:
                self._rejected += 1
                raise
            key = self._key_for(name)
            self._copy_values(values)
        self._entries += 1
        if self._apply(key, ts, self._x):
            self._late += 1
            return True
        return False

    cdef _Key _read_fast(self, object fields, object entry_id, object stream, int64_t* ts):
        cdef PyObject* found
        cdef Py_ssize_t j
        cdef object raw
        cdef bint text = self._text_first
        if type(fields) is not dict:
            return None
        if self._key_field is None:
            raw = "" if stream is None else stream
        else:
            raw = _get(<dict>fields, self._key_bytes, self._key_field, text)
        if type(raw) is str:
            found = PyDict_GetItem(self._keys, raw)
        elif type(raw) is bytes:
            found = PyDict_GetItem(self._keys_bytes, raw)
        else:
            return None
        if self._key_field is not None:
            text = type(raw) is str  # the fields spell names as the key field's value is spelled
            self._text_first = text
        if found == NULL:
            return None
        if self._time_field == "id":
            ts[0] = text_millis(entry_id, True)
        else:
            raw = _get(<dict>fields, self._time_bytes, self._time_field, text)
            if type(raw) is int:
                ts[0] = raw if 0 <= raw <= INT64_MAX else -1
            else:
                ts[0] = text_millis(raw, False)
        if ts[0] < 0:
            return None
        for j in range(self._nfields):
            if not _number(_get(<dict>fields, self._field_bytes[j], self._field_names[j], text), &self._x[j]):
                return None
        return <_Key>found

    cdef void _copy_values(self, tuple values):
        cdef Py_ssize_t j
        for j in range(self._nfields):
            self._x[j] = PyFloat_AS_DOUBLE(values[j])

    def _add_rows(self, times, list columns, valid, keys, names, list late_rows, list bad_keys):
        """The array path (see arrays.prepare_arrays): rows not ``valid`` are skipped (reported by the caller).

        ``keys`` is one key name, intp codes into ``names``, or an object
        array resolved here, cached by object identity (rows whose key is
        not text go to ``bad_keys``).
        """
        cdef const int64_t[::1] t = times
        cdef Py_ssize_t i, j, n = t.shape[0], taken = 0, late = 0, slot
        cdef const uint8_t[::1] ok
        cdef bint check = valid is not None
        cdef const Py_ssize_t[::1] codes
        cdef PyObject** items = NULL
        cdef PyObject* cache_keys[1024]
        cdef PyObject* cache_states[1024]
        cdef PyObject* item
        cdef list states
        cdef _Key key = None
        cdef int mode  # 0: one key, 1: codes, 2: objects
        cdef double** cols = <double**>PyMem_Malloc((self._nfields + 1) * sizeof(double*))
        if cols == NULL:
            raise MemoryError()
        try:
            for j in range(self._nfields):
                cols[j] = <double*><size_t>columns[j].__array_interface__["data"][0]
            if check:
                ok = valid.view(np.uint8)
            if self._kind >= K_SLIDE_TIME and self._kind != K_BARS or not self._final:
                # about a row per entry (size / step per entry for hopping): room for them at once
                self._reserve_out(self._out_n + n * (self._size // self._step if self._kind == K_BUCKETS else 1))
            # keys are created when a valid row first uses them, in row order, as the Python core does
            if isinstance(keys, str):
                mode = 0
            elif names is not None:
                mode, codes = 1, keys
                states = [None] * len(names)
            else:
                mode = 2
                items = <PyObject**><size_t>keys.__array_interface__["data"][0]
                for i in range(1024):
                    cache_keys[i] = NULL
            for i in range(n):
                if check and not ok[i]:
                    continue
                if mode == 0:
                    if key is None:
                        key = self._key_for(keys)
                elif mode == 1:
                    if states[codes[i]] is None:
                        states[codes[i]] = self._key_for(names[codes[i]])
                    key = <_Key>states[codes[i]]
                elif mode == 2:
                    item = items[i]
                    slot = <Py_ssize_t>((<uint64_t><size_t>item * 11400714819323198485ULL) >> 54)  # Fibonacci hash
                    if cache_keys[slot] == item:
                        key = <_Key>cache_states[slot]
                    else:
                        key = self._key_of_object(<object>item)
                        if key is None:
                            bad_keys.append(i)
                            continue
                        cache_keys[slot] = item  # the array keeps the object alive for this call
                        cache_states[slot] = <PyObject*>key  # and self._keys keeps the key
                for j in range(self._nfields):
                    self._x[j] = cols[j][i] + 0.0
                taken += 1
                if self._apply(key, t[i], self._x):
                    late += 1
                    late_rows.append(i)
        finally:
            PyMem_Free(cols)
            self._entries += taken
            self._late += late

    cdef _Key _key_of_object(self, object value):
        try:
            return self._key_for(key_name(value, "keys"))
        except (TypeError, ValueError):
            return None

    def _advance(self, int64_t now_ms):
        cdef int64_t watermark = now_ms - self._grace
        cdef _Key key
        if watermark > self._floor:
            self._floor = watermark
        for key in self._states:
            self._close(key, self._watermark(key))

    def _flush(self):
        cdef _Key key
        self._floor = INT64_MAX
        for key in self._states:
            self._close(key, INT64_MAX)
            if self._kind == K_BARS and key.has_bar:
                if self._final:
                    self._emit(key, key.bar_start, key.bar_end, key.bar)
                key.has_bar = False
                key.measure = 0.0

    # -- the kinds -------------------------------------------------------------

    cdef inline int64_t _watermark(self, _Key key) noexcept:
        cdef int64_t watermark = key.clock - self._grace
        return self._floor if watermark < self._floor else watermark

    cdef inline int64_t _watermark_after(self, _Key key, int64_t ts) noexcept:
        """The key's watermark once an entry at ``ts`` has moved its clock."""
        cdef int64_t clock = ts if ts > key.clock else key.clock
        cdef int64_t watermark = clock - self._grace
        return self._floor if watermark < self._floor else watermark

    cdef bint _apply(self, _Key key, int64_t ts, const double* x) except -1:
        cdef int64_t watermark = self._watermark(key), raised
        cdef bint late = False
        cdef Py_ssize_t i
        cdef Slot* row
        if self._kind == K_BUCKETS:
            late = self._add_buckets(key, ts, x, watermark)
        elif self._kind == K_SESSION:
            late = self._add_session(key, ts, x, watermark)
        else:
            if ts < watermark:
                return True
            if _len(&key.pending) == 0 and ts <= self._watermark_after(key, ts):
                # in order and already released: what the pending table would do, without it
                if ts > key.clock:
                    key.clock = ts
                if self._kind == K_BARS:
                    self._bar(key, ts, x)
                else:
                    self._slide(key, ts, x)
                return False
            i = _len(&key.pending)  # after any equal time: arrival order on ties
            while i > 0 and _at(&key.pending, i - 1)[0].i > ts:
                i -= 1
            row = _insert(&key.pending, i)
            row[0].i = ts
            memcpy(row + 1, x, self._nfields * sizeof(double))
        if ts > key.clock:
            key.clock = ts
            raised = ts - self._grace
            if raised > watermark:
                watermark = raised
                if self._kind <= K_SESSION:
                    self._close(key, watermark)
        if self._kind > K_SESSION:
            self._release(key, watermark)
        return late

    cdef int _close(self, _Key key, int64_t watermark) except -1:
        cdef Table* t = &key.windows
        cdef Slot* row
        cdef int64_t start, end
        if self._kind == K_BUCKETS:
            while _len(t) and _sat(_at(t, 0)[0].i, self._size) <= watermark:
                row = _at(t, 0)
                if self._final:
                    self._emit(key, row[0].i, _sat(row[0].i, self._size), row + 1)
                _remove(t, 0)
        elif self._kind == K_SESSION:
            while _len(t) and _sat(_at(t, 0)[1].i, self._gap) < watermark:
                row = _at(t, 0)
                start, end = row[0].i, row[1].i
                if _sat(end, self._gap) > key.sealed:
                    key.sealed = _sat(end, self._gap)
                if self._final:
                    self._emit(key, start, end, row + 2)
                _remove(t, 0)
        else:
            self._release(key, watermark)
        return 0

    cdef bint _add_buckets(self, _Key key, int64_t ts, const double* x, int64_t watermark) except -1:
        cdef int64_t newest = ts - ts % self._step
        cdef int64_t start = newest - self._size + self._step, end
        cdef bint late = False
        cdef Table* t = &key.windows
        cdef Py_ssize_t i
        cdef Slot* row
        while start <= newest:
            end = _sat(start, self._size)
            if end <= watermark:
                late = True
            else:
                i = _len(t)
                while i > 0 and _at(t, i - 1)[0].i > start:
                    i -= 1
                if i > 0 and _at(t, i - 1)[0].i == start:
                    row = _at(t, i - 1)
                else:
                    row = _insert(t, i)
                    row[0].i = start
                    memcpy(row + 1, self._blank, self._record * sizeof(Slot))
                self._update(row + 1, ts, x)
                if not self._final:
                    self._emit(key, start, end, row + 1)
            start += self._step
        return late

    cdef bint _add_session(self, _Key key, int64_t ts, const double* x, int64_t watermark) except -1:
        cdef Table* t = &key.windows
        cdef Py_ssize_t i = 0, n = _len(t)
        cdef Slot* before = NULL
        cdef Slot* after = NULL
        cdef Slot* target
        if ts <= key.sealed:
            return True
        while i < n and _at(t, i)[0].i <= ts:
            i += 1
        if i > 0 and ts <= _sat(_at(t, i - 1)[1].i, self._gap):
            before = _at(t, i - 1)
        if i < n and ts >= _at(t, i)[0].i - self._gap:
            after = _at(t, i)
        if before != NULL:
            self._update(before + 2, ts, x)
            if ts > before[1].i:
                before[1].i = ts
            if after != NULL:
                self._merge(before + 2, before + 2, after + 2)
                before[1].i = after[1].i
                _remove(t, i)
                before = _at(t, i - 1)  # the table may have moved
            target = before
        elif after != NULL:
            self._update(after + 2, ts, x)
            after[0].i = ts
            target = after
        else:
            if _sat(ts, self._gap) < watermark:
                return True
            target = _insert(t, i)
            target[0].i = ts
            target[1].i = ts
            memcpy(target + 2, self._blank, self._record * sizeof(Slot))
            self._update(target + 2, ts, x)
        if not self._final:
            self._emit(key, target[0].i, target[1].i, target + 2)
        return False

    cdef int _release(self, _Key key, int64_t watermark) except -1:
        cdef Table* pending = &key.pending
        cdef int64_t ts
        while _len(pending) and _at(pending, 0)[0].i <= watermark:
            ts = _at(pending, 0)[0].i
            memcpy(self._x2, _at(pending, 0) + 1, self._nfields * sizeof(double))
            _remove(pending, 0)
            if self._kind == K_BARS:
                self._bar(key, ts, self._x2)
            else:
                self._slide(key, ts, self._x2)
        return 0

    cdef int _slide(self, _Key key, int64_t ts, const double* x) except -1:
        cdef Slot* row
        cdef int64_t start
        _reserve(&key.buffer, 1)
        row = key.buffer.data + key.buffer.end * key.buffer.stride
        key.buffer.end += 1
        row[0].i = ts
        memcpy(row + 1, x, self._nfields * sizeof(double))
        _reserve(&key.front, 1)
        key.front.end += 1
        if not key.has_back:
            memcpy(key.back, self._blank, self._record * sizeof(Slot))
            key.has_back = True
        self._update(key.back, ts, x)
        if self._kind == K_SLIDE_TIME:
            start = ts - self._size
            while _at(&key.buffer, 0)[0].i <= start:
                self._pop_front(key)
        else:
            while _len(&key.buffer) > self._count:
                self._pop_front(key)
            start = _at(&key.buffer, 0)[0].i
        if key.front_count == 0:
            self._emit(key, start, ts, key.back)
        else:
            self._merge(self._scratch, _at(&key.front, 0), key.back)
            self._emit(key, start, ts, self._scratch)
        return 0

    cdef int _pop_front(self, _Key key) except -1:
        if key.front_count == 0:  # front used up: the back becomes the front (suffix aggregates)
            self._suffixes(key, _len(&key.buffer))
            memcpy(key.back, self._blank, self._record * sizeof(Slot))
        key.front_count -= 1
        _remove(&key.buffer, 0)
        _remove(&key.front, 0)
        return 0

    cdef void _suffixes(self, _Key key, Py_ssize_t count) noexcept:
        """front[i] = the aggregate of buffer[i:count], built from the newest back, as the Python core does."""
        cdef Py_ssize_t i
        cdef Slot* entry
        for i in range(count - 1, -1, -1):
            entry = _at(&key.buffer, i)
            memcpy(self._scratch, self._blank, self._record * sizeof(Slot))
            self._update(self._scratch, entry[0].i, <double*>(entry + 1))
            if i == count - 1:
                memcpy(_at(&key.front, i), self._scratch, self._record * sizeof(Slot))
            else:
                self._merge(_at(&key.front, i), self._scratch, _at(&key.front, i + 1))
        key.front_count = count

    cdef int _bar(self, _Key key, int64_t ts, const double* x) except -1:
        cdef bint closes
        if not key.has_bar:
            memcpy(key.bar, self._blank, self._record * sizeof(Slot))
            key.has_bar = True
            key.bar_start = ts
        self._update(key.bar, ts, x)
        key.bar_end = ts
        if self._measure == M_COUNT:
            key.measure += 1.0
        elif self._measure == M_FIELD:
            key.measure += x[self._mf1]
        else:
            key.measure += x[self._mf1] * x[self._mf2]
        closes = key.measure >= self._threshold
        if closes or not self._final:
            self._emit(key, key.bar_start, ts, key.bar)
        if closes:
            key.has_bar = False
            key.measure = 0.0
        return 0

    # -- records ---------------------------------------------------------------

    cdef void _update(self, Slot* r, int64_t ts, const double* x) noexcept:
        cdef int64_t count = r[0].i + 1
        cdef Py_ssize_t k
        cdef Op* op
        cdef double value, delta
        for k in range(self._nops):
            op = &self._ops[k]
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

    cdef void _merge(self, Slot* dst, const Slot* older, const Slot* newer) noexcept:
        """dst = older and newer combined (dst may be older); ties: first from older, last from newer."""
        cdef int64_t n_old = older[0].i, n_new = newer[0].i, count = n_old + n_new
        cdef Py_ssize_t k
        cdef Op* op
        cdef double delta
        if dst != older:
            memcpy(dst, older, self._record * sizeof(Slot))
        for k in range(self._nops):
            op = &self._ops[k]
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

    cdef int _reserve_out(self, Py_ssize_t rows) except -1:
        if rows > self._out_cap:
            self._grow_out(rows)
        return 0

    cdef int _grow_out(self, Py_ssize_t at_least=0) except -1:
        cdef Py_ssize_t k, cap = self._out_cap * 2 if self._out_cap else 256
        if cap < at_least:
            cap = at_least
        arrays = []
        for k in range(3 + self._nres):
            array = np.empty(cap, dtype=self._out_dtypes[k])
            if self._out_n:
                array[: self._out_n] = self._out_arrays[k][: self._out_n]
            arrays.append(array)
            self._out_ptr[k] = <Slot*><size_t>array.__array_interface__["data"][0]
        self._out_arrays = arrays
        self._out_cap = cap
        return 0

    cdef int _emit(self, _Key key, int64_t start, int64_t end, const Slot* r) except -1:
        cdef Py_ssize_t k, i = self._out_n
        cdef Op* op
        cdef int64_t count = r[0].i
        cdef double var
        cdef Slot** out = self._out_ptr
        if i == self._out_cap:
            self._grow_out()
        out[0][i].i = key.index
        out[1][i].i = start
        out[2][i].i = end
        for k in range(self._nres):
            op = &self._res[k]
            if op.op == R_COUNT:
                out[3 + k][i].i = count
            elif op.op == R_VALUE:
                out[3 + k][i].f = r[op.slot].f
            elif op.op == R_TIME:
                out[3 + k][i].i = r[op.slot].i
            elif op.op == R_DIV:
                out[3 + k][i].f = r[op.slot].f / r[op.slot2].f if r[op.slot2].f != 0.0 else NAN
            elif op.op == R_MEAN:
                out[3 + k][i].f = r[op.slot].f / <double>count
            else:
                var = r[op.slot + 1].f / <double>(count - op.slot2) if count > op.slot2 else NAN
                out[3 + k][i].f = sqrt(var) if op.op == R_STD and var == var else var
        self._out_n = i + 1
        return 0

    def _take_rows(self):
        """The emitted rows as dicts (the storage is kept for the next ones)."""
        return self._rows()

    cdef list _rows(self):
        cdef Py_ssize_t i, k, n = self._out_n
        cdef Slot** out = self._out_ptr
        cdef list rows = []
        cdef dict row
        cdef tuple names = self._row_names
        cdef list key_names = self._names
        for i in range(n):
            row = {"key": key_names[out[0][i].i], "start": out[1][i].i, "end": out[2][i].i}
            for k in range(self._nres):
                if self._res[k].op == R_COUNT or self._res[k].op == R_TIME:
                    row[names[3 + k]] = out[3 + k][i].i
                else:
                    row[names[3 + k]] = out[3 + k][i].f
            rows.append(row)
        self._out_n = 0
        return rows

    def _take_columns(self):
        """The emitted rows as numpy columns (handed over without a copy; new storage for the next ones)."""
        cdef Py_ssize_t k, n = self._out_n
        cdef tuple names = self._row_names
        if n == 0:
            columns = {name: np.empty(0, dtype=object if k == 0 else self._out_dtypes[k]) for k, name in enumerate(names)}
            return columns
        arrays = [array[:n] for array in self._out_arrays]
        key_names = np.empty(len(self._names), dtype=object)
        key_names[:] = self._names
        columns = {"key": key_names[arrays[0]]}
        for k in range(1, 3 + self._nres):
            columns[names[k]] = arrays[k]
        self._out_arrays = None
        self._out_n = self._out_cap = 0
        return columns

    # -- snapshots (the format is in streammachine/windows/snapshot.py) -----------

    def _floor_value(self):
        return self._floor

    cdef list _record_list(self, const Slot* r):
        cdef Py_ssize_t k, doubles = 1 + len(self.window.plan["d_init"])
        out = [r[0].i]
        for k in range(1, self._record):
            out.append(r[k].f if k < doubles else r[k].i)
        return out

    cdef void _record_from(self, list values, Slot* r) except *:
        cdef Py_ssize_t k, doubles = 1 + len(self.window.plan["d_init"])
        r[0].i = values[0]
        for k in range(1, self._record):
            if k < doubles:
                r[k].f = values[k]
            else:
                r[k].i = values[k]

    cdef list _entries_list(self, Table* t):
        cdef Py_ssize_t i, j
        cdef Slot* row
        out = []
        for i in range(_len(t)):
            row = _at(t, i)
            out.append([row[0].i, [row[1 + j].f for j in range(self._nfields)]])
        return out

    cdef void _entries_from(self, list entries, Table* t) except *:
        cdef Slot* row
        cdef Py_ssize_t j
        for ts, values in entries:
            _reserve(t, 1)
            row = t.data + t.end * t.stride
            t.end += 1
            row[0].i = ts
            for j in range(self._nfields):
                row[1 + j].f = values[j]

    def _export(self, names=None):
        cdef _Key key
        cdef Py_ssize_t i
        cdef Slot* row
        out = []
        for key in self._states if names is None else [self._keys[n] for n in names if n in self._keys]:
            item = {"key": key.name, "clock": key.clock}
            if self._kind == K_BUCKETS:
                item["windows"] = [
                    [_at(&key.windows, i)[0].i, self._record_list(_at(&key.windows, i) + 1)]
                    for i in range(_len(&key.windows))
                ]
            elif self._kind == K_SESSION:
                item["sealed"] = None if key.sealed == INT64_MIN else key.sealed
                item["sessions"] = [
                    [_at(&key.windows, i)[0].i, _at(&key.windows, i)[1].i, self._record_list(_at(&key.windows, i) + 2)]
                    for i in range(_len(&key.windows))
                ]
            else:
                item["pending"] = self._entries_list(&key.pending)
                if self._kind == K_BARS:
                    item["bar"] = self._record_list(key.bar) if key.has_bar else None
                    item["bar_start"], item["bar_end"], item["measure"] = key.bar_start, key.bar_end, key.measure
                else:
                    item["buffer"] = self._entries_list(&key.buffer)
                    item["front"] = key.front_count
            out.append(item)
        return out

    def _load(self, list keys, int64_t floor, entries, late, rejected):
        """Replace the state with checked snapshot data (see snapshot.parse)."""
        cdef _Key key
        cdef Slot* row
        cdef Py_ssize_t i
        self.clear()
        for item in keys:
            key = self._key_for(item["key"])
            key.clock = item["clock"]
            if self._kind == K_BUCKETS:
                for start, record in item["windows"]:
                    row = _insert(&key.windows, _len(&key.windows))
                    row[0].i = start
                    self._record_from(record, row + 1)
            elif self._kind == K_SESSION:
                key.sealed = item["sealed"]
                for start, end, record in item["sessions"]:
                    row = _insert(&key.windows, _len(&key.windows))
                    row[0].i, row[1].i = start, end
                    self._record_from(record, row + 2)
            else:
                self._entries_from(item["pending"], &key.pending)
                if self._kind == K_BARS:
                    key.has_bar = item["bar"] is not None
                    if key.has_bar:
                        self._record_from(item["bar"], key.bar)
                    key.bar_start, key.bar_end, key.measure = item["bar_start"], item["bar_end"], item["measure"]
                else:
                    self._entries_from(item["buffer"], &key.buffer)
                    _reserve(&key.front, _len(&key.buffer))
                    key.front.end = key.front.head + _len(&key.buffer)
                    key.has_back = _len(&key.buffer) > 0
                    memcpy(key.back, self._blank, self._record * sizeof(Slot))
                    for i in range(item["front"], _len(&key.buffer)):
                        row = _at(&key.buffer, i)
                        self._update(key.back, row[0].i, <double*>(row + 1))
                    self._suffixes(key, item["front"])
        self._floor = floor
        self._entries, self._late, self._rejected = entries, late, rejected

    # -- keys ------------------------------------------------------------------

    cdef _Key _key_for(self, str name):
        cdef PyObject* found = PyDict_GetItem(self._keys, name)
        cdef _Key key
        if found != NULL:
            return <_Key>found
        key = _Key(name, len(self._names), self._kind, self._record, self._nfields)
        self._keys[name] = key
        try:
            self._keys_bytes[name.encode("utf-8")] = key  # entries spell keys as bytes too
        except UnicodeEncodeError:
            pass
        self._names.append(name)
        self._states.append(key)
        return key
