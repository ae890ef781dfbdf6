"""Compiled fast paths, each with a pure-Python twin that gives identical results."""

from streammachine._speedups._decode_py import decode_dict_bytes_to_utf8 as _py_decode
from streammachine._speedups._decode_py import entries_with_fields as _py_entries_with_fields

try:
    from streammachine._speedups._decode import decode_dict_bytes_to_utf8, entries_with_fields

    _has_cython_decode = True
except ImportError:
    decode_dict_bytes_to_utf8 = _py_decode
    entries_with_fields = _py_entries_with_fields
    _has_cython_decode = False

__all__ = ["decode_dict_bytes_to_utf8", "entries_with_fields", "_has_cython_decode"]
