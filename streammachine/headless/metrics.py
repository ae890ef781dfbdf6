"""Prometheus metrics for a headless run (``streammachine run --metrics-port``).

A worker's state is a *snapshot*: the app's ``AppStatus`` (engine/status.py:
the agents' counters, timer runs, each group's pending count, lag and
consumers as Redis reports them) as a plain dict, from ``snapshot(app)``. ``StreamMachineCollector``
turns snapshots into metric families at scrape time; where they come from
is a *source*:

- ``LiveSource``: the app in this process; a scrape asks the app's event
  loop for a fresh snapshot.
- ``DirectorySource``: ``worker-N.json`` files that ``--workers N`` worker
  processes rewrite every ``SNAPSHOT_INTERVAL`` seconds; the supervisor
  serves their sum (counters carry a ``worker`` label).

Metrics (all prefixed ``streammachine_``): ``messages_processed_total``,
``messages_failed_total`` (handler errors), ``messages_retried_total``,
``messages_dead_lettered_total``, ``messages_skipped_total``,
``reconnects_total``, ``handler_seconds`` (a summary: ``_count`` handler
calls, ``_sum`` seconds), ``group_pending``, ``group_lag``,
``group_consumers``, ``timer_runs_total``, ``timer_failures_total``,
``workers`` and ``redis_up``.

The same server answers ``/healthz`` (the app's event loop answers; for a
supervisor, the supervisor does) and ``/readyz`` (engine/probes.py: Redis
reachable, every app running with its consumers up), 200 or 503 with a JSON
body saying why.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
from pathlib import Path
from typing import Callable, List, Tuple

from streammachine._net import is_loopback
from streammachine.engine.probes import probe_body, readiness

log = logging.getLogger("streammachine.headless.metrics")

SNAPSHOT_INTERVAL = 0.5
_COUNTERS = (
    ("processed", "messages_processed", "Entries whose handler returned (then acknowledged)."),
    ("failed", "messages_failed", "Handler calls that raised."),
    ("retried", "messages_retried", "Failed entries delivered again."),
    ("dead_lettered", "messages_dead_lettered", "Entries moved to the dead-letter stream."),
    ("skipped", "messages_skipped", "Failed entries acknowledged without handling (on_error='skip')."),
    ("reconnects", "reconnects", "Times a consumer lost Redis and retried."),
)
_AGENT_LABELS = ["app", "agent", "stream", "group", "worker"]


async def snapshot(app, worker: str = "0") -> dict:
    """The app's status (engine/status.py) as one JSON-able dict, with the worker it comes from."""
    status = await app.status()  # an outage shows as redis_up 0, never as a failed scrape
    return {
        **status.as_dict(),
        "worker": str(worker),
        "pid": os.getpid(),
        "time": time.time(),
        "grace_seconds": app.config.grace_seconds,
    }


class LiveSource:
    """Snapshots of an app running on ``loop`` in this process (scrapes come from another thread)."""

    def __init__(self, app, loop: asyncio.AbstractEventLoop, worker: str = "0", timeout: float = 5.0) -> None:
        self.app, self.loop, self.worker, self.timeout = app, loop, worker, timeout

    def __call__(self) -> List[dict]:
        future = asyncio.run_coroutine_threadsafe(snapshot(self.app, self.worker), self.loop)
        return [future.result(self.timeout)]

    def alive(self) -> bool:
        """The app's event loop runs a callback within the timeout."""
        future = asyncio.run_coroutine_threadsafe(asyncio.sleep(0), self.loop)
        try:
            future.result(self.timeout)
        except Exception:
            return False
        return True


class DirectorySource:
    """The latest snapshot each worker process wrote into ``directory``."""

    def __init__(self, directory: os.PathLike | str) -> None:
        self.directory = Path(directory)

    def __call__(self) -> List[dict]:
        out = []
        for path in sorted(self.directory.glob("worker-*.json")):
            try:
                out.append(json.loads(path.read_text()))
            except (OSError, ValueError):  # being replaced right now: the next scrape has it
                continue
        return out


def write_snapshot(directory: os.PathLike | str, data: dict) -> None:
    """Atomically replace ``worker-N.json`` (readers never see half a file)."""
    directory = Path(directory)
    final = directory / f"worker-{data['worker']}.json"
    temp = directory / f".worker-{data['worker']}.{os.getpid()}.tmp"
    temp.write_text(json.dumps(data))
    os.replace(temp, final)


class StreamMachineCollector:
    """A prometheus-client collector over snapshots from ``source()``."""

    def __init__(self, source: Callable[[], List[dict]]) -> None:
        self.source = source

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, SummaryMetricFamily

        try:
            snapshots = self.source()
        except Exception as exc:
            log.warning("metrics: no snapshot (%s: %s)", type(exc).__name__, exc)
            snapshots = []
        counters = {
            key: CounterMetricFamily(f"streammachine_{name}", doc, labels=_AGENT_LABELS) for key, name, doc in _COUNTERS
        }
        seconds = SummaryMetricFamily(
            "streammachine_handler_seconds", "Time spent in handlers: _count calls, _sum seconds.", labels=_AGENT_LABELS
        )
        runs = CounterMetricFamily(
            "streammachine_timer_runs", "Timer runs that completed.", labels=["app", "timer", "worker"]
        )
        timer_failures = CounterMetricFamily(
            "streammachine_timer_failures", "Timer runs that raised.", labels=["app", "timer", "worker"]
        )
        pending = GaugeMetricFamily(
            "streammachine_group_pending", "Entries delivered to the group, not yet acked.", labels=["stream", "group"]
        )
        lag = GaugeMetricFamily(
            "streammachine_group_lag",
            "Entries in the stream not yet delivered to the group.",
            labels=["stream", "group"],
        )
        consumers = GaugeMetricFamily(
            "streammachine_group_consumers", "Consumers known to the group.", labels=["stream", "group"]
        )
        groups: dict = {}
        for snap in snapshots:
            worker, app_name = snap["worker"], snap.get("app", "")
            for agent in snap["agents"]:
                labels = [app_name, agent["name"], agent["stream"], agent["group"], worker]
                for key, _, _ in _COUNTERS:
                    counters[key].add_metric(labels, agent[key])
                seconds.add_metric(labels, agent["processed"] + agent["failed"], agent["handler_seconds"])
                pair = (agent["stream"], agent["group"])  # the freshest report of each group wins
                if agent["pending"] is not None and (pair not in groups or snap["time"] > groups[pair][0]):
                    groups[pair] = (snap["time"], agent)
            for timer in snap["timers"]:
                runs.add_metric([app_name, timer["name"], worker], timer["runs"])
                timer_failures.add_metric([app_name, timer["name"], worker], timer["failures"])
        for (stream, group_name), (_, group) in sorted(groups.items()):
            for family, field in ((pending, "pending"), (lag, "lag"), (consumers, "consumers")):
                if group.get(field) is not None:
                    family.add_metric([stream, group_name], group[field])
        yield from counters.values()
        yield from (seconds, runs, timer_failures, pending, lag, consumers)
        yield GaugeMetricFamily("streammachine_workers", "Worker processes reporting.", value=len(snapshots))
        yield GaugeMetricFamily(
            "streammachine_redis_up",
            "1 when the last snapshot reached Redis.",
            value=1 if snapshots and all(s["redis_up"] for s in snapshots) else 0,
        )


def probe(source: Callable[[], List[dict]], path: str) -> Tuple[int, dict]:
    """``/healthz`` or ``/readyz`` over ``source``: (HTTP status, JSON body)."""
    if path == "/healthz":
        alive = getattr(source, "alive", None)
        ok = alive() if alive is not None else True
        return (200, {"status": "alive"}) if ok else (503, {"status": "not alive", "reasons": ["loop not answering"]})
    try:
        snapshots = source()
    except Exception as exc:
        return 503, probe_body(False, [f"no status: {type(exc).__name__}: {exc}"])
    ready, reasons = readiness(snapshots, bool(snapshots) and all(s.get("redis_up") for s in snapshots))
    return (200 if ready else 503), probe_body(ready, reasons)


def _wsgi_app(source: Callable[[], List[dict]]):
    """``/metrics`` (prometheus-client's app), plus the two probes."""
    from prometheus_client import make_wsgi_app

    metrics = make_wsgi_app(registry_for(source))

    def app(environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path not in ("/healthz", "/readyz"):
            return metrics(environ, start_response)
        status, body = probe(source, path)
        payload = json.dumps(body).encode()
        reason = "OK" if status == 200 else "Service Unavailable"
        start_response(
            f"{status} {reason}", [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))]
        )
        return [payload]

    return app


def _start_server(app, host: str, port: int):
    import threading
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    from prometheus_client.exposition import ThreadingWSGIServer

    class Quiet(WSGIRequestHandler):
        def log_message(self, format, *args):  # no access log on stderr
            pass

    class Server(ThreadingWSGIServer):
        address_family = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM)[0][0]

    server = make_server(host, port, app, Server, handler_class=Quiet)
    threading.Thread(target=server.serve_forever, daemon=True, name="streammachine-metrics").start()
    return server


def serve_metrics(source: Callable[[], List[dict]], port: int, host: str = "127.0.0.1"):
    """Serve ``/metrics``, ``/healthz`` and ``/readyz`` on a daemon thread; returns the server (``.shutdown()``)."""
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        raise OSError("--metrics-port needs prometheus-client: pip install 'streammachine[monitoring]'") from None

    try:
        server = _start_server(_wsgi_app(source), host, port)
    except OSError as exc:
        raise OSError(f"--metrics-port {port}: cannot listen on {host}:{port} ({exc.strerror or exc})") from None
    log.info("metrics: serving Prometheus metrics on http://%s:%d/metrics", host, server.server_port)
    if not is_loopback(host):
        log.warning(
            "metrics: --metrics-host %s is reachable from other hosts, and /metrics has no authentication "
            "(it names your streams, groups and agents); keep the default 127.0.0.1, or put it behind a "
            "firewall or an authenticating proxy",
            host,
        )
    return server


def registry_for(source: Callable[[], List[dict]]):
    """A ``CollectorRegistry`` holding just our collector."""
    from prometheus_client.registry import CollectorRegistry

    registry = CollectorRegistry(auto_describe=False)
    registry.register(StreamMachineCollector(source))
    return registry
