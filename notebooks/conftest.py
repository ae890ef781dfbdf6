"""Running the example notebooks as tests (``pytest --nbval-lax``), on the embedded default.

nbval starts one kernel per notebook, and the kernel inherits this process's
environment at that moment (the autouse isolation fixture of tests/ does not
apply to nbval's items). So while a notebook's kernel starts, the
environment here is made the one a new user has: no REDIS_* or
STREAMMACHINE_* settings, except a private STREAMMACHINE_HOME for this
session. The notebooks then start (and share) an embedded Valkey server in
that home, which is stopped when the session ends; the developer's Redis and
per-user server are never touched.
"""
from __future__ import annotations

import os
import shutil
import tempfile

import pytest

_home = None


def _session_home() -> str:
    global _home
    if _home is None:
        _home = tempfile.mkdtemp(prefix="streammachine-nbval-")
    return _home


def _is_notebook_cell(item) -> bool:
    return type(item).__name__ == "IPyNbCell"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item):
    """The first cell's setup starts its notebook's kernel: give it a clean environment."""
    if not _is_notebook_cell(item):
        yield
        return
    saved = {k: v for k, v in os.environ.items() if k.startswith(("REDIS_", "STREAMMACHINE_"))}
    for name in saved:
        del os.environ[name]
    os.environ["STREAMMACHINE_HOME"] = _session_home()
    try:
        yield
    finally:
        os.environ.pop("STREAMMACHINE_HOME", None)
        os.environ.update(saved)


def pytest_sessionfinish(session):
    global _home
    if _home is None:
        return
    from streammachine.embedded import stop_shared_server

    stop_shared_server(_home_path())
    shutil.rmtree(_home, ignore_errors=True)
    _home = None


def _home_path():
    from pathlib import Path

    return Path(_home)
