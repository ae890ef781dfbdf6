"""The `streammachine` subcommands: send, tail, info, server, mcp arguments, validation."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading

import pytest

from streammachine.cli import main
from streammachine.embedded import read_runtime_file
from tests.helpers import wait_until_sync


def _run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _usage_error(capsys, *argv):
    with pytest.raises(SystemExit) as exited:
        main(list(argv))
    assert exited.value.code == 2
    return capsys.readouterr().err


def test_send_fields_and_json(redis_url, sync_redis, capsys):
    code, out, _ = _run(capsys, "--redis-url", redis_url, "send", "orders", "item=book", "note=two words")
    assert code == 0
    first = out.strip()
    assert sync_redis.xrange("orders") == [(first, {"item": "book", "note": "two words"})]

    code, out, _ = _run(
        capsys,
        "send",
        "orders",
        "--json",
        '{"qty": 3, "tags": ["a", "b"], "item": "pen"}',
        "item=lamp",
        "--redis-url",
        redis_url,
    )
    assert code == 0
    ((entry_id, fields),) = sync_redis.xrange("orders", min=f"({first}")
    assert entry_id == out.strip()
    assert fields == {"qty": "3", "tags": '["a","b"]', "item": "lamp"}, "FIELD=VALUE wins over --json"


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["send", "s", "novalue"], "field 'novalue': expected key=value"),
        (["send", "s", "=v"], "field '=v': expected key=value"),
        (["send", "s"], "no fields to send"),
        (["send", "s", "--json", "[1, 2]"], "expected a JSON object"),
        (["send", "s", "--json", "{oops"], "not valid JSON"),
        (["tail", "s", "-n", "-1"], "argument -n/--lines: '-1': expected a count >= 0"),
        (["run", "app.py", "--workers", "0"], "argument --workers: '0': expected an integer >= 1"),
        (["run", "app.py", "--metrics-port", "70000"], "'70000': expected a TCP port number 0-65535"),
        (["run"], "the following arguments are required: target"),
        (["--log-level", "LOUD", "info", "s"], "'LOUD': expected one of DEBUG, INFO"),
        (["server", "restart"], "invalid choice: 'restart'"),
        (["mcp", "--transport", "sse"], "invalid choice: 'sse'"),
        ([], "the following arguments are required: COMMAND"),
    ],
)
def test_bad_arguments_exit_2_naming_the_problem(redis_url, capsys, argv, expected):
    err = _usage_error(capsys, "--redis-url", redis_url, *argv)
    assert expected in err


def test_tail_no_follow_and_json(redis_url, sync_redis, capsys):
    ids = [sync_redis.xadd("ticks", {"n": str(i), "sym": "AAPL"}) for i in range(5)]
    code, out, _ = _run(capsys, "--redis-url", redis_url, "tail", "ticks", "-n", "2", "--no-follow")
    assert code == 0
    assert out.splitlines() == [f"{ids[3]} n=3 sym=AAPL", f"{ids[4]} n=4 sym=AAPL"]
    code, out, _ = _run(capsys, "--redis-url", redis_url, "tail", "ticks", "-n", "1", "--no-follow", "--json")
    assert [json.loads(line) for line in out.splitlines()] == [{"id": ids[4], "fields": {"n": "4", "sym": "AAPL"}}]


def _line_reader(proc):
    lines = []

    def pump():
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))

    threading.Thread(target=pump, daemon=True).start()
    return lines


@pytest.mark.parametrize("existing", [True, False], ids=["existing-stream", "stream-created-later"])
def test_tail_follows_until_sigterm(redis_url, sync_redis, existing):
    old = sync_redis.xadd("ticks", {"n": "old"}) if existing else None
    proc = subprocess.Popen(
        ["streammachine", "tail", "ticks", "-n", "1"],
        env=dict(os.environ, REDIS_URL=redis_url),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lines = _line_reader(proc)
        if existing:
            wait_until_sync(lambda: lines == [f"{old} n=old"], 15, what="the last entry printed first")
        else:
            # the follower is blocked in XREAD once it has a connection: wait for that connection
            wait_until_sync(
                lambda: any(c.get("cmd") == "xread" for c in sync_redis.client_list()),
                15,
                what="tail to block on XREAD",
            )
        new = [sync_redis.xadd("ticks", {"n": str(i)}) for i in range(3)]
        expected = ([f"{old} n=old"] if existing else []) + [f"{i} n={n}" for n, i in enumerate(new)]
        wait_until_sync(lambda: lines == expected, 15, what=f"followed lines {expected}, got {lines}")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0, proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_info_shows_groups_pending_lag_consumers_and_dead_letters(redis_url, sync_redis, capsys):
    ids = [sync_redis.xadd("jobs", {"n": str(i)}) for i in range(4)]
    sync_redis.xgroup_create("jobs", "workers", id="0")
    sync_redis.xreadgroup("workers", "alice", {"jobs": ">"}, count=3)  # 3 delivered, not acked
    sync_redis.xack("jobs", "workers", ids[0])
    sync_redis.xadd("jobs:dead", {"n": "x", "_dlq_error": "ValueError: boom"})

    code, out, _ = _run(capsys, "--redis-url", redis_url, "info", "jobs", "--json")
    assert code == 0
    details = json.loads(out)
    assert details["length"] == 4 and details["first_id"] == ids[0] and details["last_id"] == ids[3]
    (group,) = details["groups"]
    assert (group["name"], group["pending"], group["lag"]) == ("workers", 2, 1)
    assert [(c["name"], c["pending"]) for c in group["consumers"]] == [("alice", 2)]
    assert details["dead_letter"] == {"stream": "jobs:dead", "length": 1}

    code, out, _ = _run(capsys, "--redis-url", redis_url, "info", "jobs")
    assert code == 0
    assert "stream jobs: 4 entries" in out
    assert "group workers: pending 2, lag 1" in out
    assert "consumer alice: pending 2" in out
    assert "dead letters (jobs:dead): 1" in out


def test_info_of_a_missing_stream_fails_with_exit_1(redis_url, capsys):
    code, _, err = _run(capsys, "--redis-url", redis_url, "info", "nope")
    assert code == 1
    assert "stream 'nope' does not exist" in err


def test_unreachable_redis_is_exit_1_without_the_password(capsys):
    code, _, err = _run(capsys, "--redis-url", "redis://:hunter2-secret@127.0.0.1:1/0", "send", "s", "a=1")
    assert code == 1
    assert "hunter2-secret" not in err
    assert "Redis error" in err or "Connection" in err


def test_server_start_status_stop(capsys):
    code, out, _ = _run(capsys, "server", "status")
    assert (code, "not running" in out) == (3, True)
    try:
        code, out, _ = _run(capsys, "server", "start")
        assert code == 0 and "embedded server running at redis://:***@127.0.0.1:" in out
        from streammachine.config import Settings

        password = read_runtime_file(Settings.from_env().home)["url"].split(":")[2].split("@")[0]
        assert password and password not in out
        code, out, _ = _run(capsys, "server", "status")
        assert code == 0 and "running at redis://:***@" in out and password not in out
        code, out, _ = _run(
            capsys, "--redis-url", read_runtime_file(Settings.from_env().home)["url"], "send", "s", "a=1"
        )
        assert code == 0
    finally:
        code, out, _ = _run(capsys, "server", "stop")
    assert code == 0 and "embedded server stopped" in out
    code, out, _ = _run(capsys, "server", "status")
    assert code == 3 and "not running" in out
    code, out, _ = _run(capsys, "server", "stop")
    assert "was not running" in out


def test_python_dash_m_with_arguments_is_the_cli():
    done = subprocess.run(
        [sys.executable, "-m", "streammachine", "run", "--help"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0
    assert "--workers N" in done.stdout and "--metrics-port PORT" in done.stdout
