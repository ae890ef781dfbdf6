"""Progress of long jobs: a callback, a log line where there is no terminal, nothing when off."""

from __future__ import annotations

from streammachine._progress import Progress


def test_callback_gets_every_update_with_the_total():
    calls = []
    with Progress(lambda done, total: calls.append((done, total)), 5, "job") as bar:
        bar.update(2)
        bar.update(3)
    assert calls == [(2, 5), (5, 5)]


def test_without_a_terminal_a_line_is_logged_at_the_end(capsys):
    with Progress(True, 4, "backfill ticks") as bar:
        bar.update(4)
    err = capsys.readouterr().err
    assert err.splitlines()[-1].startswith("backfill ticks: 4/4 entries (100%), ")


def test_unknown_total_and_off(capsys):
    with Progress(True, None, "replay") as bar:
        bar.update(7)
    assert capsys.readouterr().err.splitlines()[-1].startswith("replay: 7 entries, ")
    with Progress(False, 3, "quiet") as bar:
        bar.update(3)
    assert capsys.readouterr().err == ""
