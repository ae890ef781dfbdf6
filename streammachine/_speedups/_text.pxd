# cython: language_level=3
"""C parsing helpers shared by the compiled cores (``_ohlc.pyx``, ``_windows.pyx``): text to int64 ms and to double.

Each returns a "did not parse" value instead of raising: the cores then
send the entry to their checked Python path, which names the field, the
value and what was expected.
"""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.ref cimport PyObject
from libc.stdint cimport INT64_MAX, int64_t


cdef extern from "Python.h":
    double PyOS_string_to_double(const char* s, char** endptr, PyObject* overflow_exception)
    PyObject* PyErr_Occurred()
    void PyErr_Clear()
    const char* PyUnicode_AsUTF8AndSize(object text, Py_ssize_t* size) except NULL


cdef inline int64_t ascii_digits(const char* text, Py_ssize_t size, bint stream_id) noexcept nogil:
    """The number in ASCII digits (a stream id: the ms before '-<digits>'), or -1."""
    cdef Py_ssize_t i = 0
    cdef int64_t ms = 0
    cdef int digit
    while i < size and text[i] != 45:  # '-'
        digit = text[i] - 48
        if digit < 0 or digit > 9 or ms > (INT64_MAX - digit) // 10:
            return -1
        ms = ms * 10 + digit
        i += 1
    if i == 0:
        return -1
    if not stream_id:
        return ms if i == size else -1
    if i + 1 >= size:
        return -1
    i += 1
    while i < size:
        if text[i] < 48 or text[i] > 57:
            return -1
        i += 1
    return ms


cdef inline int64_t text_millis(object raw, bint stream_id) except -2:
    """``ascii_digits`` of bytes or an ASCII str; -1 for anything else (a non-ASCII str never reaches the
    UTF-8 encoder, which would choke on lone surrogates)."""
    cdef Py_ssize_t size
    cdef const char* text
    if type(raw) is bytes:
        return ascii_digits(PyBytes_AS_STRING(raw), PyBytes_GET_SIZE(raw), stream_id)
    if type(raw) is str and (<str>raw).isascii():
        text = PyUnicode_AsUTF8AndSize(raw, &size)
        return ascii_digits(text, size, stream_id)
    return -1


cdef inline bint text_double(const char* text, Py_ssize_t size, double* out) noexcept:
    """The whole of ``text`` as a double (C's strtod rules, as Python's float() minus whitespace and
    underscores); False when it does not parse or has anything after the number."""
    cdef char* end
    cdef double value = PyOS_string_to_double(text, &end, NULL)
    if PyErr_Occurred() != NULL:
        PyErr_Clear()
        return False
    if end != text + size or end == text:
        return False
    out[0] = value
    return True
