# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Compiled window core: the twin of ``streammachine/windows/_core_py.py``; entries in, rows out.

``WindowCore`` reads entries (one by one from stream fields, or as arrays)
into the state machine it extends (``_window_machine.pyx``) and collects the
rows that machine emits as numpy columns; snapshots are
``_window_snapshot.pyx``. Same algorithms and the same order of float
operations as the Python core (the parity tests hold them to it). An entry in
order costs a dict lookup and a few slot updates. Validation and error
messages come from ``streammachine.windows.values``, shared with the twin:
anything unusual in an entry takes that slower path.
"""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.dict cimport PyDict_GetItem
from cpython.float cimport PyFloat_AS_DOUBLE
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from cpython.ref cimport PyObject
from libc.math cimport NAN, isfinite, sqrt
from libc.stdint cimport INT64_MAX, int64_t, uint8_t, uint64_t

import numpy as np

from streammachine._speedups._window_snapshot import export_keys, load_keys
from streammachine.windows.values import EntryReader, key_name

from streammachine._speedups._text cimport PyUnicode_AsUTF8AndSize, text_double, text_millis
from streammachine._speedups._window_machine cimport WindowMachine, _Key
from streammachine._speedups._window_tables cimport (
    K_BARS, K_BUCKETS, K_SLIDE_TIME, Op, R_COUNT, R_DIV, R_MEAN, R_STD, R_TIME, R_VALUE, Slot,
)


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


cdef class WindowCore(WindowMachine):
    """The state machine fed with entries (one by one or as arrays), its rows collected; the public API comes
    from ``WindowMethods``."""

    cdef readonly object _reader
    cdef public Py_ssize_t _slow_reads  # entries that took the checked path (the parity tests look)
    cdef Py_ssize_t _nres
    cdef Op* _res
    cdef list _out_arrays    # emitted rows as numpy columns: key index, start, end, one per result
    cdef Slot** _out_ptr     # their data (int64 and float64 are both 8 bytes: one Slot each)
    cdef Py_ssize_t _out_n, _out_cap
    cdef list _out_dtypes
    cdef tuple _row_names
    cdef object _key_field, _time_field, _key_bytes, _time_bytes
    cdef list _field_names, _field_bytes
    cdef bint _text_first

    def __init__(self, window):
        WindowMachine.__init__(self, window)
        plan = window.plan
        self._reader = EntryReader(plan)
        self._nres = len(plan["results"])
        self._res = <Op*>PyMem_Malloc((self._nres + 1) * sizeof(Op))
        self._out_ptr = <Slot**>PyMem_Malloc((3 + self._nres) * sizeof(Slot*))
        if self._res == NULL or self._out_ptr == NULL:
            raise MemoryError()
        cdef Py_ssize_t k
        for k, (op, slot, arg) in enumerate(plan["results"]):
            self._res[k].op, self._res[k].slot, self._res[k].slot2 = op, slot, arg
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

    def __dealloc__(self):
        PyMem_Free(self._res)
        PyMem_Free(self._out_ptr)

    def clear(self):
        """Forget every key, window and counter."""
        WindowMachine.clear(self)
        self._out_n = 0

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

    # -- rows out --------------------------------------------------------------

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

    def _export(self, names=None):
        return export_keys(self, names)

    def _load(self, list keys, int64_t floor, entries, late, rejected):
        """Replace the state with checked snapshot data (see snapshot.parse)."""
        load_keys(self, keys, floor, entries, late, rejected)
