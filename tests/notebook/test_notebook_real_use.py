"""The notebook under real use (#16), in a real kernel: floods, re-runs, replaced views."""

from __future__ import annotations

from tests.notebook.test_notebook_kernel import kernel  # noqa: F401  (the fixture: a real ipykernel on the test's Redis)


def test_a_failing_handler_on_a_fast_stream_does_not_flood_the_cell(kernel):  # noqa: F811
    # the consumer's task was started by this cell, so what it logs lands in this cell's output
    out = kernel.run("""
app = App("flood", consumer_config=ConsumerConfig(block_ms=100, count=200, on_error="skip"))

@app.agent("flood", group="g")
def broken(message):
    raise ValueError("handler bug")

app.start()
await until(lambda: app.is_running, 20, what="app running")
await app.send_batch("flood", [{"n": n} for n in range(3000)])
await until(lambda: app.stats("broken").skipped == 3000, 60, what="3000 failures")
""")
    lines = [line for line in out.splitlines() if "agent __main__.broken" in line]
    assert 1 <= len(lines) <= 1 + 60 / 5 + 1, out[:2000]  # one line per 5 s interval, not one per failure
    assert "handler bug" in lines[0]


BUFFER_CELL = """
buffer = TimeSeriesBuffer(max_age_seconds=3600)

@app.agent("readings", group="g")
async def record(message):
    buffer.append({"timestamp_ms": message.timestamp_ms, "value": float(message.message["n"])})
"""
CHART_CELL = "chart = live_line(buffer, y='value', window=50, fps=20)\nchart"
REDRAW_TASKS = "sorted(t.get_name() for t in asyncio.all_tasks() if t.get_name().startswith('streammachine:Live'))"


def _app_with_buffer(kernel) -> None:  # noqa: F811
    kernel.run("app = App('views', consumer_config=ConsumerConfig(block_ms=100, count=50))\n" + BUFFER_CELL)
    kernel.run("app.start()\nawait until(lambda: app.is_running, 20, what='app running')")


def test_re_running_a_chart_or_dashboard_cell_stops_the_view_it_replaces(kernel):  # noqa: F811
    _app_with_buffer(kernel)
    kernel.run(CHART_CELL)
    kernel.run("first = chart")
    kernel.run(CHART_CELL)  # the same cell again
    assert kernel.value("(first.running, chart.running, first is chart)") == (False, True, False)
    assert kernel.value(REDRAW_TASKS) == ["streammachine:LiveLine"]

    kernel.run("dash = app.dashboard()\ndash")
    kernel.run("first_dash = dash")
    kernel.run("dash = app.dashboard()\ndash")
    assert kernel.value("(first_dash.running, dash.running)") == (False, True)
    two = "two = [live_line(buffer, y='value', fps=5) for _ in range(2)]"
    kernel.run(two)
    kernel.run("earlier_two = two")
    assert kernel.value("[v.running for v in two]") == [True, True]  # views of one run of a cell live together
    kernel.run(two)
    assert kernel.value("[v.running for v in earlier_two] + [v.running for v in two]") == [False, False, True, True]
    assert kernel.value("chart.running")  # a view another cell made is left alone
    kernel.run("await app.stop()")


def test_a_chart_follows_its_buffer_when_the_buffer_cell_is_re_run_or_says_it_is_stale(kernel):  # noqa: F811
    _app_with_buffer(kernel)
    kernel.run(CHART_CELL)
    kernel.run(
        "await app.send('readings', {'n': 1})\nawait until(lambda: chart.figure.data[0].y is not None and chart.figure.data[0].y[-1] == 1.0, 10)"
    )
    kernel.run(BUFFER_CELL)  # buffer and agent again: a new buffer, filled by the new handler
    kernel.run("await app.send('readings', {'n': 2})")
    kernel.run(
        "await until(lambda: chart.figure.data[0].y is not None and list(chart.figure.data[0].y) == [2.0], 10, what='the chart on the new buffer')"
    )
    assert kernel.value("(chart.buffer is buffer, chart.stale)") == (True, None)

    kernel.run("buffer = None")
    kernel.run("await until(lambda: chart.stale, 10, what='the chart to say it is stale')")
    assert "`buffer` no longer holds the TimeSeriesBuffer" in kernel.value("chart.stale")
    assert "is stale" in kernel.value("chart.widget.children[0].value")
    kernel.run("await app.stop()")


def test_a_view_no_frontend_shows_skips_its_redraws_until_shown_again(kernel):  # noqa: F811
    _app_with_buffer(kernel)
    kernel.run(CHART_CELL)
    # what the frontend reports as it shows the widget, then as its output is cleared
    kernel.run(
        "chart.widget._view_count = 1\nawait app.send('readings', {'n': 1})\nawait until(lambda: chart.frames >= 1, 10)"
    )
    kernel.run("chart.widget._view_count = 0\nhidden_at = chart.frames")
    kernel.run("for n in range(20):\n    await app.send('readings', {'n': n})\n    await asyncio.sleep(0.05)")
    kernel.run("await until(lambda: chart.hidden_frames >= 10, 10)")
    assert kernel.value("chart.frames == hidden_at and chart.running")
    kernel.run("chart.widget._view_count = 1\nawait until(lambda: chart.frames > hidden_at, 10, what='redraws again')")
    kernel.run("await app.stop()")


def _everything_shown(kernel, code: str) -> str:  # noqa: F811
    """All a cell showed (streams, results, error tracebacks), ANSI colours removed."""
    import re

    shown = []

    def hook(msg):
        kind, content = msg["msg_type"], msg["content"]
        if kind == "stream":
            shown.append(content["text"])
        elif kind == "error":
            shown.append("\n".join(content["traceback"]))
        elif kind in ("execute_result", "display_data"):
            shown.append(content["data"].get("text/plain", ""))

    kernel.client.execute_interactive(code, timeout=30, output_hook=hook)
    return re.sub(r"\x1b\[[0-9;]*m", "", "".join(shown)).strip()


def test_expected_errors_are_one_line_and_reprs_are_short(kernel, sync_redis):  # noqa: F811
    kernel.run("%load_ext streammachine\napp = App('messages', consumer_config=ConsumerConfig(block_ms=100))")
    for bad, says in [
        ("%streammachine frobnicate", "invalid choice"),
        ("%streammachine tail", "the following arguments are required: stream"),
        ("%%streammachine agent s\nif True\n    pass", "the cell body does not parse: line 1"),
        ("%%streammachine timer inf\npass", "timer inf: expected seconds > 0"),
        ("%%streammachine timer nan\npass", "timer nan: expected seconds > 0"),
        ("%streammachine tail nowhere", "stream 'nowhere' does not exist"),
    ]:
        shown = _everything_shown(kernel, bad)
        assert says in shown and len(shown.splitlines()) == 1, f"{bad!r} showed:\n{shown}"
    assert kernel.value("list(app.timers)") == []  # nothing registered by the refused cells

    kernel.run("@app.agent('prices', group='g')\nasync def watch(message):\n    pass")
    kernel.run("@app.timer(5, name='beat')\ndef beat():\n    pass")
    assert kernel.value("repr(app.agents['__main__.watch'])") == "<agent '__main__.watch' on 'prices' (group 'g')>"
    assert kernel.value("repr(app.timers['beat'])") == "<timer 'beat' every 5s: 0 runs, 0 failed>"
    started = _everything_shown(kernel, "app.start()")
    assert "Task" not in started and "site-packages" not in started and started.startswith("<App 'messages'")
    kernel.run("await until(lambda: app.is_running, 20)")
    html = kernel.value("app._repr_html_()")
    assert "<table>" in html and "__main__.watch" in html and "None" not in html
    status = _everything_shown(kernel, "%streammachine status")
    assert "None" not in status and "beat" in status
