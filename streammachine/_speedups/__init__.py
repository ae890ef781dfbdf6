"""Compiled fast paths, each with a pure-Python twin that gives identical results."""

import importlib
import warnings
from types import ModuleType
from typing import Optional

from streammachine._speedups._decode_py import decode_dict_bytes_to_utf8 as _py_decode
from streammachine._speedups._decode_py import entries_with_fields as _py_entries_with_fields


def load_compiled(name: str) -> Optional[ModuleType]:
    """The compiled module ``streammachine._speedups.<name>``, or None when the Python twin must serve.

    Not built (no compiler at install): None, silently. Built from other
    sources than the ones beside it (a ``.pxd`` changed and only some modules
    were rebuilt: Cython's "size changed" ValueError): None, with a warning
    that says how to rebuild, rather than an import error for the whole package.
    """
    try:
        return importlib.import_module(f"streammachine._speedups.{name}")
    except ImportError:
        return None
    except ValueError as exc:
        warnings.warn(
            f"streammachine._speedups.{name} is out of date with its sources ({exc}); the pure-Python twin serves "
            "(same results, slower). Rebuild: pip install -e . or python setup.py build_ext --inplace",
            RuntimeWarning,
            stacklevel=2,
        )
        return None


_decode = load_compiled("_decode")
decode_dict_bytes_to_utf8 = _decode.decode_dict_bytes_to_utf8 if _decode else _py_decode
entries_with_fields = _decode.entries_with_fields if _decode else _py_entries_with_fields
_has_cython_decode = _decode is not None

__all__ = ["decode_dict_bytes_to_utf8", "entries_with_fields", "_has_cython_decode", "load_compiled"]
