"""Fault suite: prints the fault table at the end and writes test-artifacts/fault-table.md."""

from __future__ import annotations

from . import faultkit


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not faultkit.RESULTS:
        return
    text = faultkit.table()
    terminalreporter.section("fault table (lost must be 0)")
    terminalreporter.write_line(text)
    out = config.rootpath / "test-artifacts" / "fault-table.md"
    out.parent.mkdir(exist_ok=True)
    out.write_text(
        "# Fault suite\n\nEvery produced record counted; duplicates are re-deliveries "
        "(at-least-once), bounded by what was in flight. Stage rows are exactly once: outputs counted per input "
        "entry (bound 0) and the stored table compared with what the inputs imply.\n\n" + text + "\n"
    )
    terminalreporter.write_line(f"written to {out}")
