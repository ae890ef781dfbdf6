"""The notebook under real use (#16), in a real kernel: floods, re-runs, replaced views."""

from __future__ import annotations

from test_notebook_kernel import kernel  # noqa: F401  (the fixture: a real ipykernel on the test's Redis)


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
