"""The dashboard page in headless Debian Chromium (Playwright), over real `streammachine run` processes.

Three runs (alpha serving the dashboard, beta, gamma with --workers 2) register
four instances; the page shows them all, their live rates change (SSE frames),
the charts draw; beta is SIGKILLed and its row disappears once its TTL has run
out. Screenshots go to test-artifacts/dashboard/.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from streammachine.embedded import free_port
from tests.dashboard.dashboard_procs import start_app
from tests.notebook.test_notebook_browser import CHROME, chromium_page

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "dashboard"

pytestmark = pytest.mark.browser

ROW_NAMES = (
    "() => Array.from(document.querySelectorAll('#instances tbody tr[data-id]')).map(r => r.children[1].textContent)"
)
RATES = "() => Array.from(document.querySelectorAll('#instances tbody tr[data-id] td.rate')).map(td => td.textContent)"


@pytest.fixture
def deployment(redis_url, tmp_path):
    pytest.importorskip("uvicorn")
    pytest.importorskip("sse_starlette")
    port = free_port()
    runs = {
        "alpha": start_app(tmp_path, redis_url, "alpha", "--dashboard-port", str(port)),
        "beta": start_app(tmp_path, redis_url, "beta"),
        "gamma": start_app(tmp_path, redis_url, "gamma", "--workers", "2"),
    }
    try:
        yield {"base": f"http://127.0.0.1:{port}", "runs": runs}
    finally:
        for run in runs.values():
            if run.proc.poll() is None:
                run.stop(signal.SIGTERM, timeout=30)
            else:
                run.log.close()


@pytest.fixture
def page():
    if not Path(CHROME).exists():
        pytest.skip(f"no Chromium at {CHROME} (apt-get install -y chromium)")
    pytest.importorskip("playwright.sync_api", reason="playwright (Python) is not installed")
    with chromium_page(1400, 1100) as pg:
        yield pg


def test_page_shows_live_instances_and_drops_a_killed_one(deployment, page):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.goto(deployment["base"] + "/", wait_until="domcontentloaded")
    # alpha, beta and gamma's two workers: four instances from three processes trees
    page.wait_for_function(
        f"() => {{ const n = ({ROW_NAMES})(); return n.filter(x => x === 'gamma').length === 2 "
        "&& n.includes('alpha') && n.includes('beta'); }",
        timeout=60_000,
    )
    page.wait_for_function("() => document.querySelector('#link').textContent === 'live'", timeout=10_000)
    before = page.evaluate(RATES)
    page.wait_for_function(
        f"(before) => JSON.stringify(({RATES})()) !== JSON.stringify(before)", arg=before, timeout=15_000
    )
    # the charts have drawn lines for the groups of all three apps
    page.wait_for_function(
        "() => { const lines = Array.from(document.querySelectorAll('#chart-rate path.js-line'));"
        " return lines.length >= 3 && lines.filter(p => (p.getAttribute('d') || '').split('L').length > 3).length >= 3; }",
        timeout=20_000,
    )
    page.screenshot(path=str(ARTIFACTS / "dashboard-overview.png"), full_page=True)

    page.click("#instances tbody tr[data-id]")  # per-instance detail
    page.wait_for_selector("#detail-agents tbody tr td", timeout=10_000)
    assert "events" in page.inner_text("#detail-agents")

    page.click("nav button[data-tab=streams]")  # stream browser, groups and consumers
    page.wait_for_selector("#streams tbody tr[data-stream]", timeout=10_000)
    page.click("#streams tbody tr[data-stream='gamma:events']")
    page.wait_for_selector("#entries tbody tr td.fields", timeout=10_000)
    assert "app=gamma" in page.inner_text("#entries")
    assert "workers" in page.inner_text("#groups")
    page.screenshot(path=str(ARTIFACTS / "dashboard-streams.png"), full_page=True)
    page.click("nav button[data-tab=storage]")
    page.wait_for_selector("#tables", timeout=10_000)
    page.click("nav button[data-tab=overview]")

    deployment["runs"]["beta"].proc.send_signal(signal.SIGKILL)  # no clean stop: its entry must expire
    page.wait_for_function(
        f"() => {{ const n = ({ROW_NAMES})(); return !n.includes('beta') && n.length === 3; }}", timeout=20_000
    )
    page.screenshot(path=str(ARTIFACTS / "dashboard-after-kill.png"), full_page=True)
    assert page.errors == [], page.errors


def test_dead_letters_replayed_from_the_page(redis_url, sync_redis, tmp_path, page):
    import httpx

    from tests.dashboard.dashboard_procs import start_dlq_app
    from tests.helpers import wait_until_sync

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    token, port = "page-t0ken", free_port()
    run = start_dlq_app(tmp_path, redis_url, port, token)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_sync(lambda: _answers(httpx, base), timeout=30, what="the dashboard serving")
        wait_until_sync(lambda: sync_redis.exists("payments"), timeout=30, what="the group created")
        for i in range(8):
            sync_redis.xadd("payments", {"n": str(i), **({"poison": "1"} if i % 2 else {})})
        wait_until_sync(lambda: sync_redis.xlen("payments:dead") == 4, timeout=30, what="4 dead letters")
        sync_redis.set("fixed", "1")  # the fix is deployed

        page.goto(base + "/", wait_until="domcontentloaded")
        page.wait_for_selector("#login:not([hidden])", timeout=10_000)  # no token yet: the page asks for it
        page.fill("#token", token)
        page.click("#login-go")
        page.wait_for_function("() => document.querySelector('#link').textContent === 'live'", timeout=15_000)
        assert token not in page.evaluate("document.cookie")  # HttpOnly: no script on the page can read it
        page.click("nav button[data-tab=deadletters]")
        page.click("#dlq-streams tbody tr[data-stream='payments:dead']", timeout=10_000)
        page.wait_for_function("() => document.querySelectorAll('#dlq-entries input[type=checkbox]').length === 4")
        assert "ValueError: cannot parse amount" in page.inner_text("#dlq-entries")
        page.screenshot(path=str(ARTIFACTS / "dashboard-dead-letters.png"), full_page=True)
        answers = iter(["accept", token])  # the confirmation, then the token for the write

        def on_dialog(dialog):
            answer = next(answers)
            dialog.accept() if answer == "accept" else dialog.accept(answer)

        page.on("dialog", on_dialog)
        page.click("#dlq-replay-all")
        page.wait_for_function(
            "() => document.querySelector('#dlq-result').textContent === 'replayed 4'", timeout=15_000
        )
        wait_until_sync(lambda: sync_redis.llen("handled") == 8, timeout=30, what="the replayed entries handled")
        assert sorted(sync_redis.lrange("handled", 0, -1), key=int) == [str(i) for i in range(8)]  # once each
        assert sync_redis.xlen("payments:dead") == 0
        assert page.errors == [], page.errors
    finally:
        if run.proc.poll() is None:
            run.stop(signal.SIGTERM, timeout=30)
        else:
            run.log.close()


def _answers(httpx, base: str) -> bool:
    try:
        return httpx.get(base + "/healthz", timeout=0.5).status_code == 200
    except httpx.HTTPError:
        return False
