"""Fuzzing the CLI's arguments: any argv ends in a usage error (exit 2), a clear failure (exit 1) or success;
never a traceback, and never the password of the Redis URL in what it prints."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streammachine.cli import main

PASSWORD = "Cl1-S3cret-pw"
arg_text = st.one_of(
    st.text(max_size=12),
    st.sampled_from(
        ["-", "--", "=", "k=", "=v", "k=v", "-n", "--json", "{}", "[]", '{"a": 1}', "-1", "0", "99999999999999999999"]
    ),
    # a shell passing bytes that are not UTF-8: Python turns them into lone surrogates
    st.binary(min_size=1, max_size=6).map(os.fsdecode),
)
commands = st.sampled_from([["send"], ["info"], ["tail", "--no-follow"], ["server", "status"]])
options = st.lists(st.sampled_from(["--json", "-n", "--lines", "--log-level", "--no-follow", "--workers"]), max_size=2)


def run_cli(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:
            code = exc.code
    return code, out.getvalue(), err.getvalue()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(command=commands, args=st.lists(arg_text, max_size=4), opts=options, opt_values=st.lists(arg_text, max_size=2))
def test_cli_never_crashes_on_arguments(redis_server, command, args, opts, opt_values):
    url = redis_server.url
    argv = ["--redis-url", url, *command, *args]
    for opt, value in zip(opts, opt_values + [""] * len(opts)):
        argv += [opt, value]
    code, out, err = run_cli(argv)
    assert code in (0, 1, 2, 3), (argv, code, err)
    if code in (1, 2):
        assert "streammachine" in err or "usage:" in err, (argv, err)
    assert redis_server.password not in out + err


@settings(max_examples=60, deadline=None)
@given(
    url=st.one_of(
        st.text(max_size=30),
        st.sampled_from(
            [
                "redis://",
                "redis://:@",
                "redis://h:notaport/0",
                "redis://127.0.0.1:1/0",
                f"redis://u:{PASSWORD}@127.0.0.1:1/0",
                f"redis://127.0.0.1:1/0?password={PASSWORD}",
                "unix:///nonexistent.sock",
                "redis://127.0.0.1:1/notadb",
                f"rediss://u:{PASSWORD}@127.0.0.1:1/0",
                "http://example.com",
                "redis+cluster://127.0.0.1:1/0",
            ]
        ),
    )
)
def test_cli_bad_redis_urls_fail_cleanly(url):
    code, out, err = run_cli(["--redis-url", url, "info", "s"])
    assert code in (1, 2), (url, code, err)
    assert err.startswith("streammachine") or "usage:" in err, (url, err)
    assert PASSWORD not in out + err


def test_cli_non_utf8_field_value_is_a_clear_error(redis_url):
    """Regression: `streammachine send s k=$'\\xff'` (argv holds a lone surrogate) ended in a traceback."""
    code, out, err = run_cli(["--redis-url", redis_url, "send", "s", "k=" + os.fsdecode(b"\xff")])
    assert code in (1, 2) and "not valid UTF-8" in err and "Traceback" not in err


def test_cli_invalid_utf8_through_a_real_shell(redis_url):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "streammachine.cli",
            "--redis-url",
            redis_url,
            "send",
            "s",
            b"k=\xff".decode("utf-8", "surrogateescape"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode in (1, 2) and "Traceback" not in proc.stderr, proc.stderr
