# cython: language_level=3, boundscheck=False, wraparound=False
"""Compiled twin of ``_decode_py.py``: stream entry fields to str -> str."""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.dict cimport PyDict_Next, PyDict_SetItem
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
