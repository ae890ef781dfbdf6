"""Compiled fast paths, each with a pure-Python twin that gives identical results."""

from streammachine._speedups._decode_py import decode_dict_bytes_to_utf8 as _py_decode

try:
    from streammachine._speedups._decode import decode_dict_bytes_to_utf8

    _has_cython_decode = True
except ImportError:
    decode_dict_bytes_to_utf8 = _py_decode
    _has_cython_decode = False

__all__ = ["decode_dict_bytes_to_utf8", "_has_cython_decode"]
