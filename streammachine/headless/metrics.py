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
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import os
import socket
import time
from pathlib import Path
from typing import Callable, List

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


def serve_metrics(source: Callable[[], List[dict]], port: int, host: str = "127.0.0.1"):
    """Serve ``/metrics`` on a daemon thread; returns the server (``.shutdown()`` stops it)."""
    try:
        from prometheus_client import start_http_server
    except ImportError:
        raise OSError("--metrics-port needs prometheus-client: pip install 'streammachine[monitoring]'") from None

    try:
        server, _thread = start_http_server(port, addr=host, registry=registry_for(source))
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


def is_loopback(host: str) -> bool:
    """Whether every address ``host`` names is a loopback one ("", "0.0.0.0" and "::" mean every interface)."""
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host or None, None, proto=socket.IPPROTO_TCP)}
    except (OSError, UnicodeError):
        return False
    if not host or not addresses:
        return False
    return all(ipaddress.ip_address(str(address).split("%", 1)[0]).is_loopback for address in addresses)


def registry_for(source: Callable[[], List[dict]]):
    """A ``CollectorRegistry`` holding just our collector."""
    from prometheus_client.registry import CollectorRegistry

    registry = CollectorRegistry(auto_describe=False)
    registry.register(StreamMachineCollector(source))
    return registry
