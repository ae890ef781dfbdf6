# cython: language_level=3, boundscheck=False, wraparound=False
"""Compiled twin of ``_decode_py.py``: stream entry fields to str -> str."""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.dict cimport PyDict_Next, PyDict_SetItem
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE
from cpython.ref cimport PyObject
from cpython.unicode cimport PyUnicode_DecodeUTF8


cdef inline object _text(object value):
    if type(value) is bytes:
        return PyUnicode_DecodeUTF8(PyBytes_AS_STRING(value), PyBytes_GET_SIZE(value), "replace")
    if type(value) is str:
        return value
    return str(value)


def decode_dict_bytes_to_utf8(raw):
    """Decode a stream entry's fields (bytes or str keys/values) to str -> str."""
    cdef dict out = {}
    cdef Py_ssize_t pos = 0
    cdef PyObject* key
    cdef PyObject* value
    if type(raw) is not dict:
        return {_text(k): _text(v) for k, v in raw.items()}
    while PyDict_Next(raw, &pos, &key, &value):
        PyDict_SetItem(out, _text(<object>key), _text(<object>value))
    return out


def entries_with_fields(reply):
    """Compiled twin of ``_decode_py.entries_with_fields``: a raw XREADGROUP/XREAD reply (RESP2 or RESP3)
    for one stream -> ``[(id, fields dict), ...]`` (the hot path of every raw read)."""
    cdef list out = []
    cdef dict fields
    cdef Py_ssize_t i, size
    if not reply:
        return out
    entries = next(iter(reply.values())) if type(reply) is dict else reply[0][1]
    for entry in entries:
        entry_id, flat = entry
        if flat is None:  # deleted while pending
            out.append((entry_id, None))
            continue
        if type(flat) is list:
            fields = {}
            size = PyList_GET_SIZE(flat)
            for i in range(0, size - 1, 2):
                PyDict_SetItem(fields, <object>PyList_GET_ITEM(flat, i), <object>PyList_GET_ITEM(flat, i + 1))
        else:
            pairs = iter(flat)
            fields = dict(zip(pairs, pairs))
        out.append((entry_id, fields))
    return out
