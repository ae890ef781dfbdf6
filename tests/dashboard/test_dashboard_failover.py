"""Dashboard election across real processes: SIGKILL the serving one, another serves within the lock TTL,
never two at once; the killed process's instance entry disappears after its TTL."""

from __future__ import annotations

import signal
import threading
import time

import httpx
import pytest

from streammachine.embedded import free_port
from tests.dashboard.dashboard_procs import FAST_ENV, start_app
from tests.helpers import wait_until_sync

pytest.importorskip("uvicorn")
pytest.importorskip("sse_starlette")

LOCK_TTL = float(FAST_ENV["STREAMMACHINE_DASHBOARD_LOCK_TTL"])
INSTANCE_TTL = float(FAST_ENV["STREAMMACHINE_INSTANCE_TTL"])


def answers(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=0.5).status_code == 200
    except httpx.HTTPError:
        return False


class Watch:
    """Samples both ports every 50 ms: a sample where both answer means two dashboards at once."""

    def __init__(self, ports):
        self.ports, self.samples, self.stop = ports, [], threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.stop.is_set():
            self.samples.append(tuple(answers(port) for port in self.ports))
            time.sleep(0.05)  # a sampling period, not a wait for a condition

    def both_up(self) -> int:
        return sum(all(sample) for sample in self.samples)


@pytest.mark.fault
def test_sigkill_of_the_dashboard_process_fails_over_within_the_ttl(redis_url, tmp_path):
    ports = [free_port(), free_port()]  # different ports: two serving at once would be visible
    runs = [start_app(tmp_path, redis_url, f"node{i}", "--dashboard-port", str(port)) for i, port in enumerate(ports)]
    watch = Watch(ports)
    try:
        wait_until_sync(lambda: any(answers(p) for p in ports), timeout=30, what="a dashboard serving")
        first = 0 if answers(ports[0]) else 1
        other = 1 - first
        owner = httpx.get(f"http://127.0.0.1:{ports[first]}/api/health").json()["dashboard"]["owner"]
        assert owner["pid"] == runs[first].proc.pid
        wait_until_sync(
            lambda: len(httpx.get(f"http://127.0.0.1:{ports[first]}/api/instances").json()) == 2,
            timeout=15,
            what="both instances registered",
        )
        # the watch must have seen the first one serving, or "never two at once" would prove nothing
        wait_until_sync(lambda: any(s[first] for s in watch.samples), timeout=5, what="the watch seeing the first")
        killed_at = time.monotonic()
        runs[first].proc.send_signal(signal.SIGKILL)
        runs[first].proc.wait(10)
        # the lock expires at most LOCK_TTL after the last renewal; candidates try every second
        wait_until_sync(lambda: answers(ports[other]), timeout=LOCK_TTL + 3, what="the other process serving")
        took_over = time.monotonic() - killed_at
        health = httpx.get(f"http://127.0.0.1:{ports[other]}/api/health").json()
        assert health["dashboard"]["owner"]["pid"] == runs[other].proc.pid
        # the killed process could not delete its instance entry: it goes when its TTL runs out
        wait_until_sync(
            lambda: (
                [i["name"] for i in httpx.get(f"http://127.0.0.1:{ports[other]}/api/instances").json()]
                == [f"node{other}"]
            ),
            timeout=INSTANCE_TTL + 3,
            what="the killed instance gone from the registry",
        )
        watch.stop.set()
        watch.thread.join()
        assert watch.both_up() == 0, "two dashboards answered at once"
        assert any(s[first] for s in watch.samples) and any(s[other] for s in watch.samples)
        print(f"takeover {took_over:.2f} s after SIGKILL (lock TTL {LOCK_TTL} s)")
    finally:
        watch.stop.set()
        for run in runs:
            if run.proc.poll() is None:
                run.stop(signal.SIGTERM, timeout=30)
            else:
                run.log.close()
