# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Compiled window state machine: keys, their windows, what an entry in time does to them, what closes them.

The state half of the twin of ``streammachine/windows/_core_py.py``; the
entries in and rows out are ``_windows.pyx`` (``WindowCore`` subclasses
``WindowMachine``), snapshots ``_window_snapshot.pyx``. Same algorithms and
the same order of float operations as the Python core (the parity tests
hold them to it, snapshots included). Records are rows of 8-byte slots in
growable tables per key (``_window_tables.pxd``), so an entry in order costs
a few slot updates. Custom reducers (Python objects per window) are not
here: windows that have them run on the Python core.
"""
from cpython.dict cimport PyDict_GetItem
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from cpython.ref cimport PyObject
from libc.stdint cimport INT64_MAX, INT64_MIN, int64_t
from libc.string cimport memcpy

from streammachine._speedups._window_records cimport record_merge, record_update
from streammachine._speedups._window_tables cimport (
    K_BARS, K_BUCKETS, K_SESSION, K_SLIDE_TIME, M_COUNT, M_FIELD, Op, Slot, Table, _at, _init_table, _insert, _len,
    _remove, _reserve, _sat,
)


cdef class _Key:
    """One key's state; tables by kind (see the Python core's _Key)."""

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


cdef inline int64_t _watermark(WindowMachine core, _Key key) noexcept:
    cdef int64_t watermark = key.clock - core._grace
    return core._floor if watermark < core._floor else watermark


cdef inline int64_t _watermark_after(WindowMachine core, _Key key, int64_t ts) noexcept:
    """The key's watermark once an entry at ``ts`` has moved its clock."""
    cdef int64_t clock = ts if ts > key.clock else key.clock
    cdef int64_t watermark = clock - core._grace
    return core._floor if watermark < core._floor else watermark


cdef class WindowMachine:
    """Window state and the update paths; ``_windows.WindowCore`` adds entries in and rows out."""

    def __init__(self, window):
        plan = window.plan
        if plan["customs"]:
            raise ValueError("custom reducers (Reduce) run on the Python core: use PythonWindowState")
        from streammachine.windows import aggregates as A, spec as S
        assert (A.OP_SUM, A.OP_PSUM, A.OP_WELFORD, A.R_TIME, S.K_BARS, S.M_FIELD) == (0, 1, 6, 6, 4, 1)
        self.window = window
        self._kind = plan["kind"]
        self._size, self._step, self._gap, self._count = plan["size"], plan["step"], plan["gap"], plan["count"]
        self._measure, self._threshold = plan["measure"], plan["threshold"]
        self._mf1, self._mf2 = plan["measure_fields"]
        self._grace, self._final = plan["grace"], plan["final"]
        self._nfields = len(plan["fields"])
        self._record = 1 + len(plan["d_init"]) + len(plan["t_init"])
        self._nops = len(plan["updates"])
        self._ops = <Op*>PyMem_Malloc((self._nops + 1) * sizeof(Op))
        self._blank = <Slot*>PyMem_Malloc(self._record * sizeof(Slot))
        self._scratch = <Slot*>PyMem_Malloc(self._record * sizeof(Slot))
        self._x = <double*>PyMem_Malloc((self._nfields + 1) * sizeof(double))
        self._x2 = <double*>PyMem_Malloc((self._nfields + 1) * sizeof(double))
        if not (self._ops and self._blank and self._scratch and self._x and self._x2):
            raise MemoryError()
        cdef Py_ssize_t k
        for k, (op, slot, slot2, f1, f2) in enumerate(plan["updates"]):
            self._ops[k].op, self._ops[k].slot, self._ops[k].slot2 = op, slot, slot2
            self._ops[k].f1, self._ops[k].f2 = f1, f2
        self._blank[0].i = 0
        for k, value in enumerate(plan["d_init"]):
            self._blank[1 + k].f = value
        for k, value in enumerate(plan["t_init"]):
            self._blank[1 + len(plan["d_init"]) + k].i = value
        self.clear()

    def __dealloc__(self):
        PyMem_Free(self._ops)
        PyMem_Free(self._blank)
        PyMem_Free(self._scratch)
        PyMem_Free(self._x)
        PyMem_Free(self._x2)

    def clear(self):
        """Forget every key, window and counter."""
        self._keys = {}
        self._keys_bytes = {}
        self._names = []
        self._states = []
        self._floor = INT64_MIN
        self._entries = self._late = self._rejected = 0

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

    def _advance(self, int64_t now_ms):
        cdef int64_t watermark = now_ms - self._grace
        cdef _Key key
        if watermark > self._floor:
            self._floor = watermark
        for key in self._states:
            self._close(key, _watermark(self, key))

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

    cdef bint _apply(self, _Key key, int64_t ts, const double* x) except -1:
        cdef int64_t watermark = _watermark(self, key), raised
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
            if _len(&key.pending) == 0 and ts <= _watermark_after(self, key, ts):
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
                record_update(self._ops, self._nops, row + 1, ts, x)
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
            record_update(self._ops, self._nops, before + 2, ts, x)
            if ts > before[1].i:
                before[1].i = ts
            if after != NULL:
                record_merge(self._ops, self._nops, self._record, before + 2, before + 2, after + 2)
                before[1].i = after[1].i
                _remove(t, i)
                before = _at(t, i - 1)  # the table may have moved
            target = before
        elif after != NULL:
            record_update(self._ops, self._nops, after + 2, ts, x)
            after[0].i = ts
            target = after
        else:
            if _sat(ts, self._gap) < watermark:
                return True
            target = _insert(t, i)
            target[0].i = ts
            target[1].i = ts
            memcpy(target + 2, self._blank, self._record * sizeof(Slot))
            record_update(self._ops, self._nops, target + 2, ts, x)
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
        record_update(self._ops, self._nops, key.back, ts, x)
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
            record_merge(self._ops, self._nops, self._record, self._scratch, _at(&key.front, 0), key.back)
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
            record_update(self._ops, self._nops, self._scratch, entry[0].i, <double*>(entry + 1))
            if i == count - 1:
                memcpy(_at(&key.front, i), self._scratch, self._record * sizeof(Slot))
            else:
                record_merge(self._ops, self._nops, self._record, _at(&key.front, i), self._scratch, _at(&key.front, i + 1))
        key.front_count = count

    cdef int _bar(self, _Key key, int64_t ts, const double* x) except -1:
        cdef bint closes
        if not key.has_bar:
            memcpy(key.bar, self._blank, self._record * sizeof(Slot))
            key.has_bar = True
            key.bar_start = ts
        record_update(self._ops, self._nops, key.bar, ts, x)
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

    cdef int _emit(self, _Key key, int64_t start, int64_t end, const Slot* r) except -1:
        """Hand out one row of ``key``'s window [start, end] with record ``r`` (``WindowCore`` stores it)."""
        raise NotImplementedError

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
