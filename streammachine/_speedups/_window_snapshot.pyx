# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""A compiled window core's state out to plain lists and back (the format is in streammachine/windows/snapshot.py).

``WindowCore._export`` and ``_load`` call these; ``snapshot.py`` checks what
comes in before ``load_keys`` sees it.
"""
from libc.stdint cimport INT64_MIN, int64_t
from libc.string cimport memcpy

from streammachine._speedups._window_machine cimport WindowMachine, _Key
from streammachine._speedups._window_records cimport record_update
from streammachine._speedups._window_tables cimport (
    K_BARS, K_BUCKETS, K_SESSION, Slot, Table, _at, _insert, _len, _reserve,
)


cdef list _record_list(WindowMachine core, const Slot* r):
    cdef Py_ssize_t k, doubles = 1 + len(core.window.plan["d_init"])
    out = [r[0].i]
    for k in range(1, core._record):
        out.append(r[k].f if k < doubles else r[k].i)
    return out


cdef void _record_from(WindowMachine core, list values, Slot* r) except *:
    cdef Py_ssize_t k, doubles = 1 + len(core.window.plan["d_init"])
    r[0].i = values[0]
    for k in range(1, core._record):
        if k < doubles:
            r[k].f = values[k]
        else:
            r[k].i = values[k]


cdef list _entries_list(WindowMachine core, Table* t):
    cdef Py_ssize_t i, j
    cdef Slot* row
    out = []
    for i in range(_len(t)):
        row = _at(t, i)
        out.append([row[0].i, [row[1 + j].f for j in range(core._nfields)]])
    return out


cdef void _entries_from(WindowMachine core, list entries, Table* t) except *:
    cdef Slot* row
    cdef Py_ssize_t j
    for ts, values in entries:
        _reserve(t, 1)
        row = t.data + t.end * t.stride
        t.end += 1
        row[0].i = ts
        for j in range(core._nfields):
            row[1 + j].f = values[j]


def export_keys(WindowMachine core, names=None):
    """The keys' state (all, or those of ``names`` that exist) as lists, first-seen order."""
    cdef _Key key
    cdef Py_ssize_t i
    cdef Slot* row
    out = []
    for key in core._states if names is None else [core._keys[n] for n in names if n in core._keys]:
        item = {"key": key.name, "clock": key.clock}
        if core._kind == K_BUCKETS:
            item["windows"] = [
                [_at(&key.windows, i)[0].i, _record_list(core, _at(&key.windows, i) + 1)]
                for i in range(_len(&key.windows))
            ]
        elif core._kind == K_SESSION:
            item["sealed"] = None if key.sealed == INT64_MIN else key.sealed
            item["sessions"] = [
                [_at(&key.windows, i)[0].i, _at(&key.windows, i)[1].i, _record_list(core, _at(&key.windows, i) + 2)]
                for i in range(_len(&key.windows))
            ]
        else:
            item["pending"] = _entries_list(core, &key.pending)
            if core._kind == K_BARS:
                item["bar"] = _record_list(core, key.bar) if key.has_bar else None
                item["bar_start"], item["bar_end"], item["measure"] = key.bar_start, key.bar_end, key.measure
            else:
                item["buffer"] = _entries_list(core, &key.buffer)
                item["front"] = key.front_count
        out.append(item)
    return out


def load_keys(WindowMachine core, list keys, int64_t floor, entries, late, rejected):
    """Replace ``core``'s state with checked snapshot data (see snapshot.parse)."""
    cdef _Key key
    cdef Slot* row
    cdef Py_ssize_t i
    core.clear()
    for item in keys:
        key = core._key_for(item["key"])
        key.clock = item["clock"]
        if core._kind == K_BUCKETS:
            for start, record in item["windows"]:
                row = _insert(&key.windows, _len(&key.windows))
                row[0].i = start
                _record_from(core, record, row + 1)
        elif core._kind == K_SESSION:
            key.sealed = item["sealed"]
            for start, end, record in item["sessions"]:
                row = _insert(&key.windows, _len(&key.windows))
                row[0].i, row[1].i = start, end
                _record_from(core, record, row + 2)
        else:
            _entries_from(core, item["pending"], &key.pending)
            if core._kind == K_BARS:
                key.has_bar = item["bar"] is not None
                if key.has_bar:
                    _record_from(core, item["bar"], key.bar)
                key.bar_start, key.bar_end, key.measure = item["bar_start"], item["bar_end"], item["measure"]
            else:
                _entries_from(core, item["buffer"], &key.buffer)
                _reserve(&key.front, _len(&key.buffer))
                key.front.end = key.front.head + _len(&key.buffer)
                key.has_back = _len(&key.buffer) > 0
                memcpy(key.back, core._blank, core._record * sizeof(Slot))
                for i in range(item["front"], _len(&key.buffer)):
                    row = _at(&key.buffer, i)
                    record_update(core._ops, core._nops, key.back, row[0].i, <double*>(row + 1))
                core._suffixes(key, item["front"])
    core._floor = floor
    core._entries, core._late, core._rejected = entries, late, rejected
