"""The market-data notebook in a real JupyterLab, in headless Debian Chromium.

JupyterLab runs with private Jupyter dirs and REDIS_URL pointing at the
test's server (its kernels inherit it). The test runs every cell but the
last (which stops the app), checks that the candlestick plots render and
change as trades arrive, saves screenshots under test-artifacts/, then runs
the last cell.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = "02-market-data.ipynb"
ARTIFACTS = ROOT / "test-artifacts" / "notebook-browser"
CHROME = "/usr/bin/chromium"
CHROME_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]

pytestmark = pytest.mark.browser

# The first candlestick plot: its trace data (as plotly.js holds it) and how many plots exist.
PLOT_STATE = """() => {
  const plots = document.querySelectorAll('.js-plotly-plot');
  const gd = plots[0];
  if (!gd || !gd.data || !gd.data.length || !gd.data[0].close) return null;
  const t = gd.data[0];
  return {plots: plots.length, type: t.type, n: t.close.length,
          x: Array.from(t.x).map(String), close: Array.from(t.close)};
}"""

KERNEL_IDLE = "() => /\\|\\s*Idle/.test(document.querySelector('#jp-main-statusbar')?.textContent || '')"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def lab(tmp_path, redis_url):
    if not Path(CHROME).exists():
        pytest.skip(f"no Chromium at {CHROME} (apt-get install -y chromium)")
    pytest.importorskip("playwright.sync_api", reason="playwright (Python) is not installed")
    home, root = tmp_path / "jupyter", tmp_path / "root"
    root.mkdir()
    shutil.copy(ROOT / "notebooks" / NOTEBOOK, root)
    # no "get Jupyter news?" toast over the screenshots
    settings = home / "config" / "lab" / "user-settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False})
    )
    port, token = _free_port(), "streammachine-test"
    env = dict(
        os.environ,
        REDIS_URL=redis_url,
        JUPYTER_CONFIG_DIR=str(home / "config"),
        JUPYTER_DATA_DIR=str(home / "data"),
        JUPYTER_RUNTIME_DIR=str(home / "runtime"),
        IPYTHONDIR=str(home / "ipython"),
    )
    command = [
        sys.executable,
        "-m",
        "jupyter",
        "lab",
        "--no-browser",
        f"--port={port}",
        "--ip=127.0.0.1",
        f"--ServerApp.token={token}",
        f"--ServerApp.root_dir={root}",
        "--LabApp.expose_app_in_browser=True",
    ]
    if os.geteuid() == 0:
        command.append("--allow-root")  # else: "Running as root is not recommended"
    log_path = home / "lab.log"
    with open(log_path, "w") as log:
        server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=1)
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("jupyter lab did not start:\n" + log_path.read_text()[-3000:])
                time.sleep(0.2)  # polling a server that is starting: there is nothing to wait on
        yield {"base": base, "token": token}
    finally:
        server.terminate()
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@contextlib.contextmanager
def chromium_page(width: int = 1280, height: int = 1000):
    """A page in headless Debian Chromium; ``page.errors`` collects the page's uncaught errors."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROME, headless=True, args=CHROME_ARGS)
        context = browser.new_context(viewport={"width": width, "height": height})
        pg = context.new_page()
        pg.errors = []
        pg.on("pageerror", lambda error: pg.errors.append(str(error)))
        try:
            yield pg
        finally:
            context.close()
            browser.close()


@pytest.fixture
def page(lab):
    with chromium_page() as pg:
        yield pg


def _run_command(page, command: str) -> None:
    page.evaluate(f"() => window.jupyterapp.commands.execute('{command}')")


def _select_last_cell(page) -> int:
    return page.evaluate("""() => { const nb = window.jupyterapp.shell.currentWidget.content;
                                    nb.activeCellIndex = nb.widgets.length - 1; return nb.activeCellIndex; }""")


def test_market_data_notebook_renders_live_candlesticks(lab, page):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.goto(f"{lab['base']}/lab/tree/{NOTEBOOK}?token={lab['token']}&reset")
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=120_000)
    # the toolbar says idle before any kernel exists; the status bar's "| Idle" means a kernel is up
    page.wait_for_function(KERNEL_IDLE, timeout=120_000)

    _select_last_cell(page)
    _run_command(page, "notebook:run-all-above")  # everything but the cell that stops the app
    page.wait_for_function(
        f"() => {{ const s = ({PLOT_STATE})(); return s && s.plots >= 2 && s.n >= 2; }}", timeout=90_000
    )
    plot = page.locator(".js-plotly-plot").first
    plot.scroll_into_view_if_needed()
    first = page.evaluate(PLOT_STATE)
    plot.screenshot(path=str(ARTIFACTS / "market-data-1.png"))
    # the chart must move on by itself: new trades change the last candle or add candles
    page.wait_for_function(
        f"""(before) => {{ const s = ({PLOT_STATE})();
                          return s && (s.n !== before.n || JSON.stringify(s.close) !== JSON.stringify(before.close)
                                       || JSON.stringify(s.x) !== JSON.stringify(before.x)); }}""",
        arg=first,
        timeout=15_000,
    )
    page.wait_for_function(f"(n) => ({PLOT_STATE})().n > n", arg=first["n"], timeout=15_000)  # a new candle
    second = page.evaluate(PLOT_STATE)
    plot.screenshot(path=str(ARTIFACTS / "market-data-2.png"))
    page.screenshot(path=str(ARTIFACTS / "market-data-page.png"))
    assert first["type"] == second["type"] == "candlestick" and second["plots"] >= 2
    assert second["n"] > first["n"], (first, second)
    assert (ARTIFACTS / "market-data-1.png").read_bytes() != (ARTIFACTS / "market-data-2.png").read_bytes()

    last = _select_last_cell(page)
    _run_command(page, "notebook:run-cell")
    page.wait_for_function(
        f"""() => {{ const cell = window.jupyterapp.shell.currentWidget.content.widgets[{last}];
                    return cell.node.querySelector('.jp-OutputArea-output')?.textContent.includes('stopped'); }}""",
        timeout=30_000,
    )
    after_stop = page.evaluate(PLOT_STATE)
    assert after_stop is not None and after_stop["n"] >= second["n"]  # stopped charts keep their last frame

    # closing the views takes the charts off the page, without frontend errors
    page.evaluate("""() => window.jupyterapp.shell.currentWidget.sessionContext.session.kernel
                          .requestExecute({code: 'for chart in charts: chart.close()'}).done""")
    page.wait_for_function("() => document.querySelectorAll('.js-plotly-plot').length === 0", timeout=15_000)
    assert page.errors == [], page.errors
