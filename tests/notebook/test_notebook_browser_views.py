"""The lighter chart (live_stream_line) and view clean-up in a real JupyterLab, in headless Chromium.

The lab and page fixtures are the market-data browser test's. The notebook
is written here: an app fills a buffer from a timer, one cell shows a
``live_stream_line``. Checked in the browser: plotly.js arrives from the
kernel, the trace grows by extendTraces (one whole window sent, then new
points), and clearing the cell's output makes the kernel-side view skip its
redraws (the frontend's view count reaches the kernel).
"""

from __future__ import annotations

import json
import time

import nbformat
import pytest

from tests.notebook.test_notebook_browser import CHROME_ARGS, KERNEL_IDLE, _run_command
from tests.notebook.test_notebook_browser import lab as market_lab  # noqa: F401

pytestmark = pytest.mark.browser

NOTEBOOK = "stream-line.ipynb"
CELLS = [
    """
import random
from streammachine import App, TimeSeriesBuffer
from streammachine.notebook import live_stream_line, until
app = App("browser-stream-line")
client = await app.redis.get_client()
await client.delete("browser:ticks")
buffer = TimeSeriesBuffer(max_age_seconds=60)

@app.timer(0.01)
async def produce():
    await app.send_batch("browser:ticks", [{"v": random.random()} for _ in range(20)])

@app.agent("browser:ticks", group="chart", batch=True)
async def collect(messages):
    buffer.append({"timestamp_ms": [m.timestamp_ms for m in messages], "v": [float(m.message["v"]) for m in messages]})

app.start()
await until(lambda: len(buffer) > 100, 60, what="data in the buffer")
""",
    "chart = live_stream_line(buffer, y='v', window='5s', fps=10, max_points=400)\nchart",
]

TRACE = """() => { const gd = document.querySelector('.streammachine-stream-line');
  if (!gd || !gd.data || !gd.data.length) return null;
  return {n: gd.data[0].x.length, frames: Number(gd.dataset.frames || 0), last: gd.data[0].x[gd.data[0].x.length - 1]}; }"""


def _kernel(page, code: str) -> None:
    page.evaluate(
        """(code) => window.jupyterapp.shell.currentWidget.sessionContext.session.kernel
                     .requestExecute({code}).done""",
        code,
    )


def _kernel_value(page, expression: str):
    """Ask the kernel through the page (the page is the frontend): the value comes back as a stream."""
    return page.evaluate(
        """async (code) => { const kernel = window.jupyterapp.shell.currentWidget.sessionContext.session.kernel;
              let out = ''; const future = kernel.requestExecute({code});
              future.onIOPub = (msg) => { if (msg.header.msg_type === 'stream') out += msg.content.text; };
              await future.done; return out; }""",
        f"import json; print(json.dumps({expression}))",
    )


@pytest.fixture
def lab(market_lab, tmp_path):  # noqa: F811
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c.strip()) for c in CELLS])
    # without a kernelspec the lab asks which kernel to start
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(notebook, tmp_path / "root" / NOTEBOOK)
    return market_lab


@pytest.fixture
def page(lab):
    from playwright.sync_api import sync_playwright

    from tests.notebook.test_notebook_browser import CHROME

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROME, headless=True, args=CHROME_ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 1000})
        pg = context.new_page()
        pg.errors = []
        pg.on("pageerror", lambda error: pg.errors.append(str(error)))
        try:
            yield pg
        finally:
            context.close()
            browser.close()


def test_the_lighter_chart_extends_in_the_browser_and_a_cleared_view_stops_redrawing(lab, page):
    page.goto(f"{lab['base']}/lab/tree/{NOTEBOOK}?token={lab['token']}&reset")
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=120_000)
    page.wait_for_function(KERNEL_IDLE, timeout=120_000)
    _run_command(page, "notebook:run-all-cells")
    try:
        page.wait_for_function(
            f"() => {{ const s = ({TRACE})(); return s && s.n > 0 && s.frames >= 1; }}", timeout=90_000, polling=200
        )
    except Exception:
        outputs = page.evaluate("() => Array.from(document.querySelectorAll('.jp-OutputArea')).map(e => e.innerText)")
        raise AssertionError(f"no chart: outputs {outputs}, page errors {page.errors}") from None
    first = page.evaluate(TRACE)
    try:
        page.wait_for_function(f"(f) => ({TRACE})().frames >= f.frames + 5", arg=first, timeout=30_000, polling=200)
    except Exception:
        state = _kernel_value(
            page,
            "[chart.frames, chart.snapshots, chart.hidden, chart.running, chart.last_error, len(buffer), "
            "chart.widget._view_count, chart.skipped]",
        )
        raise AssertionError(
            f"browser {first} -> {page.evaluate(TRACE)}; kernel {state}; errors {page.errors}"
        ) from None
    later = page.evaluate(TRACE)
    assert later["last"] > first["last"]  # the trace moved on
    sent = json.loads(_kernel_value(page, "[chart.snapshots, chart.frames, chart.bytes_sent, chart.hidden]"))
    # a whole window per view the lab rendered (it may render one twice), then only new points
    assert 1 <= sent[0] <= 3 and sent[1] >= sent[0] + 5 and not sent[3], sent

    _run_command(page, "notebook:select-all")  # clear every output: the chart's view goes
    _run_command(page, "notebook:clear-cell-output")
    deadline = time.monotonic() + 20
    while not json.loads(_kernel_value(page, "chart.hidden")):
        assert time.monotonic() < deadline, "the kernel never learnt that the chart is no longer shown"
        time.sleep(0.2)  # polling the kernel through the page: nothing to wait on in between
    frames = json.loads(_kernel_value(page, "chart.frames"))
    _kernel(page, "import asyncio; await asyncio.sleep(1)")
    assert json.loads(_kernel_value(page, "[chart.frames, chart.hidden_frames > 3]")) == [frames, True]
    _kernel(page, "await app.stop()")
    assert page.errors == [], page.errors
