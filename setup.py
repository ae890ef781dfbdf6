"""Builds the optional Cython speedups; installs fine without a compiler.

Each extension under streammachine/_speedups has a pure-Python twin, so a
failed build only costs speed: the failure is reported and install goes on.
"""

import os
import sys

from setuptools import setup
from setuptools.command.build_ext import build_ext


class OptionalBuildExt(build_ext):
    def run(self):
        try:
            super().run()
        except Exception as exc:  # no compiler, no Cython: fall back to Python
            self._warn(exc)

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as exc:
            self._warn(exc, ext.name)

    @staticmethod
    def _warn(exc, name="speedups"):
        sys.stderr.write(f"WARNING: {name} not compiled ({exc}); the pure-Python version will be used.\n")


def extensions():
    if os.environ.get("STREAMMACHINE_NO_CYTHON"):
        return []
    try:
        from Cython.Build import cythonize
    except ImportError:
        return []
    here = os.path.dirname(os.path.abspath(__file__))
    sources = sorted(
        os.path.join("streammachine", "_speedups", f)
        for f in os.listdir(os.path.join(here, "streammachine", "_speedups"))
        if f.endswith(".pyx")
    )
    if not sources:
        return []
    return cythonize(
        sources,
        language_level=3,
        compiler_directives={"boundscheck": False, "wraparound": False, "cdivision": True},
        quiet=True,
    )


setup(ext_modules=extensions(), cmdclass={"build_ext": OptionalBuildExt})
