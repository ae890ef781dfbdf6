"""`streammachine dlq list|show|replay|purge`: the CLI over streammachine.redis.deadletters."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from streammachine.cli import main
from tests.redis.test_deadletters import poison


def _run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_list_and_show(redis_url, sync_redis, capsys):
    ids = poison(sync_redis, "orders", 3, note="two words")
    code, out, _ = _run(capsys, "dlq", "list", "orders", "--redis-url", redis_url)
    lines = out.splitlines()
    assert code == 0 and [line.split()[0] for line in lines] == ids
    assert "orders/1000-0 agent=worker deliveries=3" in lines[0] and "error='ValueError: poison'" in lines[0]
    assert lines[0].endswith("i=0 note=two words")
    code, out, _ = _run(
        capsys, "--redis-url", redis_url, "dlq", "list", "orders:dead", "--json", "--start", f"({ids[0]}"
    )
    assert [json.loads(line)["id"] for line in out.splitlines()] == ids[1:]
    code, out, _ = _run(capsys, "--redis-url", redis_url, "dlq", "show", "orders", ids[2], "--json")
    shown = json.loads(out)
    assert code == 0 and shown["fields"] == {"i": "2", "note": "two words"} and shown["original_id"] == "1002-0"
    code, out, _ = _run(capsys, "--redis-url", redis_url, "dlq", "show", "orders", ids[2])
    assert "error: ValueError: poison" in out and "  note: two words" in out
    code, out, _ = _run(capsys, "--redis-url", redis_url, "dlq", "list", "elsewhere")
    assert code == 0 and out.strip() == "no dead letters in elsewhere:dead"


def test_replay_and_purge_ask_first(redis_url, sync_redis, capsys, monkeypatch):
    ids = poison(sync_redis, "orders", 4)
    monkeypatch.setattr("sys.stdin", open("/dev/null"))  # no answer: nothing is done
    code, _, err = _run(capsys, "--redis-url", redis_url, "dlq", "replay", "orders", "--all")
    assert code == 1 and "Replay all 4 dead letters of 'orders:dead' to the streams they came from?" in err
    assert "not confirmed; nothing changed" in err and sync_redis.xlen("orders:dead") == 4
    code, _, err = _run(capsys, "--redis-url", redis_url, "dlq", "purge", "orders", ids[0])
    assert (
        code == 1
        and "Delete 1 dead letter(s) of 'orders:dead' for good?" in err
        and sync_redis.xlen("orders:dead") == 4
    )

    code, out, _ = _run(capsys, "--redis-url", redis_url, "dlq", "replay", "orders", ids[0], ids[1], "--yes")
    assert code == 0 and out.strip() == "replayed 2 dead letter(s) from orders:dead: 2 to orders"
    assert [f["i"] for _, f in sync_redis.xrange("orders")] == ["0", "1"]
    code, out, _ = _run(capsys, "--redis-url", redis_url, "dlq", "purge", "orders", "--before", ids[3], "--yes")
    assert code == 0 and out.strip() == "purged 1 dead letter(s) from orders:dead; 1 left"
    code, out, _ = _run(capsys, "--redis-url", redis_url, "dlq", "purge", "orders", "--all", "-y")
    assert code == 0 and sync_redis.xlen("orders:dead") == 0


@pytest.mark.parametrize(
    "argv, code, expected",
    [
        (["replay", "orders"], 2, "give exactly one of IDs or --all"),
        (["replay", "orders", "1-0", "--all"], 2, "give exactly one of IDs or --all"),
        (["purge", "orders", "--all", "--before", "5"], 2, "give exactly one of IDs, --all or --before ID"),
        (["replay", "orders", "nope", "--yes"], 1, "ID='nope': 'nope': expected a stream id"),
        (
            ["replay", "orders", "1-0", "--yes"],
            1,
            "dead-letter stream 'orders:dead' has no entry 1-0 (nothing was changed)",
        ),
        (["purge", "orders", "1-0", "--yes"], 1, "has no entry 1-0"),
        (["show", "orders", "1-0"], 1, "dead-letter stream 'orders:dead' has no entry 1-0"),
        (["list", "hashy"], 1, "key 'hashy:dead' is a Redis hash, not a stream of dead letters"),
        (["replay", "orders", "--all", "--target", "hashy:dead", "--yes"], 1, "cannot replay into 'hashy:dead'"),
        (["list", "orders", "--count", "0"], 2, "'0': expected an integer >= 1"),
    ],
)
def test_bad_input_is_a_clear_error(redis_url, sync_redis, capsys, argv, code, expected):
    poison(sync_redis, "orders", 1)
    sync_redis.hset("hashy:dead", "a", "1")
    try:
        got = main(["--redis-url", redis_url, "dlq", *argv])
    except SystemExit as exited:
        got = exited.code
    err = capsys.readouterr().err
    assert got == code and expected in err, err
    assert sync_redis.xlen("orders:dead") == 1, "nothing changed"


def test_replay_in_a_subprocess_reports_json(redis_url, sync_redis):
    ids = poison(sync_redis, "orders", 2)
    done = subprocess.run(
        [sys.executable, "-m", "streammachine", "dlq", "replay", "orders", "--all", "--yes", "--json"],
        env={**os.environ, "REDIS_URL": redis_url},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert [r["dead_letter_id"] for r in result["replayed"]] == ids and result["atomic"] is True
    assert sync_redis.xlen("orders") == 2 and sync_redis.xlen("orders:dead") == 0


def test_an_agents_own_dead_letter_stream(redis_url, sync_redis, capsys):
    ids = poison(sync_redis, "orders", 2, dead="failures")
    where = ["--redis-url", redis_url, "dlq"]
    code, out, _ = _run(capsys, *where, "list", "orders", "--dead-letter-stream", "failures")
    assert code == 0 and [line.split()[0] for line in out.splitlines()] == ids
    code, out, _ = _run(capsys, *where, "replay", "orders", "--all", "--dead-letter-stream", "failures", "--yes")
    assert code == 0 and "replayed 2 dead letter(s) from failures: 2 to orders" in out
    assert sync_redis.xlen("orders") == 2 and sync_redis.xlen("failures") == 0
