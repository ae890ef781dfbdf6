"""Fault injection against stages: outputs and table changes exactly once, whatever crashes.

The stage under test (``stage_app.py``, run by the real headless runner)
turns each input ``{"seq": n}`` into one output ``{"seq": n}`` and adds to a
table ``r<n % 10>`` += 1 and ``sum`` += n, committed with the ack of the
entry in one atomic Lua call per read. While records flow, processes are
SIGKILLed or frozen, the server restarts, crashes or freezes, and commit
replies are lost on the wire. Afterwards every input entry must have exactly one output
(lost 0, duplicates 0) and the stored table must equal what the input
entries imply. Each test adds a row to the fault table.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, List, Optional

import pytest
import redis

from streammachine import App, ConsumerConfig
from streammachine.embedded import EmbeddedServer
from streammachine.windows.stage import table_name
from tests.helpers import wait_until

from .faultkit import Producer, check_stage, kill_while_producing, stage_settled, stage_tally, window_tally
from .stage_app import WINDOW

pytestmark = [pytest.mark.fault, pytest.mark.timeout(120)]

HERE = Path(__file__).parent
GROUP = "stage"
TABLE_PREFIX = "streammachine:table:"
RECORDS = 3000
PACE: dict = {"batch": 10, "interval": 0.03}  # ~300 records/s: a restart (~2 s) fits between kills while records flow


def spawn_stage(url: str, *args: str, **env: str) -> subprocess.Popen:
    """``streammachine run stage_app.py [args]``: the real headless runner, settings from the environment."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "STREAMMACHINE_", "STAGE_"))}
    environ.update(
        {
            "REDIS_URL": url,
            "STREAMMACHINE_HOME": os.environ["STREAMMACHINE_HOME"],
            "STREAMMACHINE_EMBEDDED": "0",
            "STREAMMACHINE_COUNT": "20",
            "STREAMMACHINE_BLOCK_MS": "100",
            "STREAMMACHINE_CLAIM_IDLE_MS": "1000",
            "STREAMMACHINE_RETRY_DELAY_MS": "50",
            "STREAMMACHINE_GRACE_SECONDS": "5",
            "STREAMMACHINE_STORAGE": "redis",  # no Manager process: the app's only children are its workers
            "STAGE_SLOW_MS": "4",  # the stage is the bottleneck once one process is down: kills land mid-read
            **env,
        }
    )
    command = [sys.executable, "-m", "streammachine", "run", str(HERE / "stage_app.py"), *args]
    # its log goes to a file (this test's tmp dir): a pipe nobody reads would block a chatty process
    logs = Path(os.environ["STREAMMACHINE_HOME"]).parent / "stage-logs"
    logs.mkdir(exist_ok=True)
    log = logs / f"stage-{len(list(logs.iterdir()))}.log"
    with open(log, "wb") as stderr:
        proc = subprocess.Popen(command, env=environ, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr)
    proc.log = log  # type: ignore[attr-defined]
    return proc


def log_tail(proc: subprocess.Popen) -> str:
    return proc.log.read_text(errors="replace")[-3000:]  # type: ignore[attr-defined]


def assert_logged(procs: List[subprocess.Popen], text: str, fault: str) -> None:
    """The fault bit: some stage process logged ``text`` (a lost connection, entries reclaimed from a peer)."""
    assert any(text in proc.log.read_text(errors="replace") for proc in procs), (  # type: ignore[attr-defined]
        f"{fault}: no stage process logged {text!r}: the fault did not bite"
    )


async def ready(proc: subprocess.Popen) -> None:
    assert proc.stdout is not None
    line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 30)
    if b"READY" not in line:
        raise AssertionError(f"stage app did not start: {line!r} {log_tail(proc)}")


async def stop_gracefully(procs: List[subprocess.Popen]) -> None:
    """SIGTERM, and a clean exit: whatever a process still had to commit is committed (or left pending)."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    codes = [await asyncio.to_thread(proc.wait, 30) for proc in procs]
    details = [log_tail(proc) for proc, code in zip(procs, codes) if code]
    assert codes == [0] * len(procs), f"graceful SIGTERM exit codes {codes}: {details}"


def kill_all(procs: List[subprocess.Popen]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def producer_app(url: str) -> App:
    return App("producer", redis_url=url, consumer_config=ConsumerConfig(block_ms=100))


async def settle(client, stream: str, timeout: float, what: str) -> None:
    await wait_until(lambda: stage_settled(client, stream, GROUP), timeout, interval=0.1, what=what)


async def kill_under_load(
    client,
    out: str,
    sending: asyncio.Future,
    rng: random.Random,
    kill_one,
    max_kills: int,
    min_kills: int = 3,
    per_output: int = 1,
) -> int:
    """``await kill_one()`` at random moments while ``sending`` runs: after a random number of new outputs
    (``per_output``: input entries one output stands for, e.g. a window's row)."""
    return await kill_while_producing(
        sending,
        kill_one,
        lambda: client.xlen(out) * per_output,
        lambda: rng.randint(100, 500),
        timeout=30,
        max_kills=max_kills,
        min_kills=min_kills,
    )


def live_children(pid: int, marker: str | None = None) -> list:
    import psutil

    try:
        return [
            p
            for p in psutil.Process(pid).children()
            # a supervisor's workers carry --worker-index (it has other children too); forked workers do not
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE and (marker is None or marker in p.cmdline())
        ]
    except psutil.NoSuchProcess:
        return []


# -- stage processes killed ------------------------------------------------------


def tally_and_check(fault: str, client, stream: str, table: str, confirmed, started: float, window: bool) -> None:
    """The row of the table stage (``stage_tally``) or of the window stage (``window_tally``), checked."""
    if window:
        key = TABLE_PREFIX + table_name(stream, "stage", WINDOW)
        check_stage(window_tally(f"window {fault}", client, stream, key, confirmed, started))
    else:
        check_stage(stage_tally(f"stage: {fault}", client, stream, TABLE_PREFIX + table, confirmed, started))


async def _kill_run_processes(
    url: str, client, stream: str, table: str, fault: str, seed: int, window: bool = False
) -> None:
    """Two ``streammachine run`` stage processes; SIGKILL one at random moments and start a new one."""
    started = time.monotonic()
    rng = random.Random(seed)
    env = {"STAGE_STREAM": stream, "STAGE_TABLE": table, "STAGE_WINDOW": "1" if window else "0"}
    procs = [spawn_stage(url, **env) for _ in range(2)]
    producing = producer_app(url)
    live = []  # started and consuming: the ones a kill may pick
    starting = []

    async def start(proc: subprocess.Popen) -> None:
        await ready(proc)
        live.append(proc)

    try:
        for proc in procs:
            await start(proc)
        producer = Producer(producing, stream, **PACE)
        sending = asyncio.ensure_future(producer.send(RECORDS))

        async def kill_one():
            # a replacement starts in the background (seconds under load): the next kill need not wait for it
            await wait_until(lambda: live, 30, what="a live stage process to kill")
            victim = live.pop(rng.randrange(len(live)))
            victim.kill()
            await asyncio.to_thread(victim.wait, 5)
            procs.append(spawn_stage(url, **env))
            starting.append(asyncio.ensure_future(start(procs[-1])))

        per_output = 100 if window else 1  # a row per window of 100
        kills = await kill_under_load(client, f"{stream}:out", sending, rng, kill_one, 4, per_output=per_output)
        await asyncio.gather(*starting)
        await settle(client, stream, 40, f"{fault}: every input committed")
        await stop_gracefully([proc for proc in procs if proc.returncode is None])
    finally:
        for task in starting:
            task.cancel()
        kill_all(procs)
        await producing.shutdown()
    tally_and_check(f"{fault} x{kills}", client, stream, table, producer.confirmed, started, window)


@pytest.mark.parametrize("window", [False, True], ids=["table", "window"])
async def test_stage_sigkill_run_processes(redis_url, window):
    """For the window stage: two processes share one window key, so their commits also conflict all along."""
    client = redis.Redis.from_url(redis_url)
    try:
        await _kill_run_processes(
            redis_url, client, "orders", "totals", "SIGKILL `streammachine run` process", 11, window=window
        )
    finally:
        client.close()


async def _kill_workers(
    redis_url: str, parent: subprocess.Popen, fault: str, seed: int, *, marker: Optional[str], min_age: float
) -> None:
    """SIGKILL ``parent``'s 2 worker processes (children carrying ``marker``) at random moments while records
    flow; it starts new ones. Only workers older than ``min_age`` seconds are picked."""
    started = time.monotonic()
    rng = random.Random(seed)
    client = redis.Redis.from_url(redis_url)
    producing = producer_app(redis_url)

    def workers() -> list:
        return live_children(parent.pid, marker)

    try:
        await wait_until(
            lambda: len(workers()) == 2 and _consumers(client, "orders") >= 2, 60, what=f"{fault}: 2 workers consuming"
        )
        producer = Producer(producing, "orders", **PACE)
        sending = asyncio.ensure_future(producer.send(RECORDS))

        async def kill_one():
            old_enough = await wait_until(
                lambda: [p for p in workers() if time.time() - p.create_time() > min_age],
                30,
                what=f"a worker running for {min_age} s",
            )
            rng.choice(old_enough).kill()
            await wait_until(lambda: len(workers()) == 2, 30, what=f"{fault}: a new worker started")

        kills = await kill_under_load(client, "orders:out", sending, rng, kill_one, max_kills=4)
        await settle(client, "orders", 40, f"{fault}: every input committed")
        await stop_gracefully([parent])
    finally:
        for child in live_children(parent.pid, marker):
            child.kill()
        kill_all([parent])
        await producing.shutdown()
    result = stage_tally(
        f"stage: {fault} x{kills}", client, "orders", TABLE_PREFIX + "totals", producer.confirmed, started
    )
    client.close()
    check_stage(result)


async def test_stage_sigkill_workers_of_run_supervisor(redis_url):
    """`streammachine run --workers 2`: SIGKILL its worker processes; the supervisor starts new ones."""
    supervisor = spawn_stage(redis_url, "--workers", "2")
    # a worker killed within 5 s of its start counts as failing to start (three in a row stop the run)
    await _kill_workers(
        redis_url,
        supervisor,
        "SIGKILL `streammachine run --workers 2` worker",
        21,
        marker="--worker-index",
        min_age=5.5,
    )


async def test_stage_sigkill_forked_agent_workers(redis_url):
    """An agent with processes=2 (forked workers of one App): SIGKILL the workers; its runner restarts them
    under the same consumer names, which take their pending entries back at once."""
    app_proc = spawn_stage(redis_url, STAGE_PROCESSES="2")
    try:
        await ready(app_proc)
    except BaseException:
        kill_all([app_proc])
        raise
    await _kill_workers(redis_url, app_proc, "SIGKILL forked agent worker (processes=2)", 31, marker=None, min_age=0)


def _consumers(client, stream: str) -> int:
    try:
        return len(client.xinfo_consumers(stream, GROUP))
    except redis.ResponseError:  # no stream or group yet
        return 0


async def test_stage_sigkill_on_local_cluster(tmp_path):
    """The same on a 3-master cluster: input, output and table share the hash tag {orders}, so the commit is
    one atomic Lua call on the master that owns the tag."""
    from redis.cluster import RedisCluster

    from streammachine.testing import LocalCluster

    with LocalCluster(tmp_path / "cluster", masters=3) as cluster:
        client = RedisCluster(host="127.0.0.1", port=cluster.ports[0], password=cluster.password)
        try:
            await _kill_run_processes(
                cluster.url, client, "{orders}", "{orders}:totals", "cluster, SIGKILL `streammachine run` process", 41
            )
        finally:
            client.close()


@pytest.mark.parametrize("table", ["totals", ""], ids=["with-table", "outputs-only"])
async def test_stage_process_stalled(redis_url, table):
    """SIGSTOP a stage process for 2.5 s (over claim_idle) three times, alternately one of two: its peer
    claims the entries it holds and commits them; on SIGCONT the stalled one finishes and commits what it
    had, late. A late commit must check each entry (outputs-only stages have no table version to save them)."""
    started = time.monotonic()
    client = redis.Redis.from_url(redis_url)
    env = {"STAGE_TABLE": table}
    procs = [spawn_stage(redis_url, **env) for _ in range(2)]
    producing = producer_app(redis_url)
    try:
        for proc in procs:
            await ready(proc)
        producer = Producer(producing, "orders", **PACE)
        sending = asyncio.ensure_future(producer.send(RECORDS))
        for n in range(3):
            floor = (n + 1) * RECORDS // 5
            await wait_until(lambda: client.xlen("orders:out") > floor, 30, interval=0.05, what="flow before stall")
            victim = procs[n % 2]
            victim.send_signal(signal.SIGSTOP)
            try:
                await asyncio.sleep(2.5)  # the fault itself: a 2.5 s stall of one process
            finally:
                victim.send_signal(signal.SIGCONT)
        await sending
        await settle(client, "orders", 40, "every input committed after process stalls")
        await stop_gracefully(procs)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
        kill_all(procs)
        await producing.shutdown()
    assert_logged(procs, "idle entries", "stage process stalled")  # the peer reclaimed what it held
    label = "with table" if table else "outputs only"
    result = stage_tally(
        f"stage: stage process stalled 2.5s (SIGSTOP/SIGCONT) x3, {label}",
        client,
        "orders",
        TABLE_PREFIX + table if table else None,
        producer.confirmed,
        started,
    )
    client.close()
    check_stage(result)


# -- the server under fault ------------------------------------------------------------


async def _server_fault_case(
    server: EmbeddedServer, fault: str, inject: Callable, rounds: int, bite: str, window: bool = False
) -> None:
    """Two stage processes (2 consumers each; the window stage: one process, one consumer) while ``inject()``
    hits the server ``rounds`` times mid-stream."""
    started = time.monotonic()
    client = redis.Redis.from_url(server.url, socket_timeout=10)
    if window:
        procs = [spawn_stage(server.url, STAGE_WINDOW="1")]
    else:
        procs = [spawn_stage(server.url, STAGE_CONCURRENCY="2") for _ in range(2)]
    producing = producer_app(server.url)
    try:
        for proc in procs:
            await ready(proc)
        producer = Producer(producing, "orders", **PACE)
        sending = asyncio.ensure_future(producer.send(RECORDS, deadline=90))
        for n in range(rounds):
            floor = (n + 1) * RECORDS // (rounds + 2)
            await wait_until(
                lambda: _xlen(client, "orders:out") * (100 if window else 1) > floor,  # a window row: 100 entries
                30,
                interval=0.05,
                what="flow before fault",
            )
            await inject()
        await sending
        assert producer.next_seq == RECORDS
        await settle(client, "orders", 40, f"{fault}: every input committed")
        await stop_gracefully(procs)
    finally:
        kill_all(procs)
        await producing.shutdown()
    assert_logged(procs, bite, fault)
    try:
        tally_and_check(fault, client, "orders", "totals", producer.confirmed, started, window)
    finally:
        client.close()


def _xlen(client, stream: str) -> int:
    try:
        return client.xlen(stream)
    except (redis.ConnectionError, redis.TimeoutError):
        return 0


@pytest.mark.parametrize("window", [False, True], ids=["table", "window"])
@pytest.mark.parametrize("how", ["restart", "crash"])
async def test_stage_server_restart_with_aof_fsync_always(tmp_path, how, window):
    """The server restarts (SIGTERM) or crashes (SIGKILL) mid-stream, twice; AOF with appendfsync always
    replays every commit it confirmed, and none half: a Lua commit reaches the AOF as one MULTI/EXEC."""
    server = EmbeddedServer(tmp_path / "aof", extra_args=["--appendfsync", "always"]).start()
    try:

        async def inject():
            if how == "crash":
                await asyncio.to_thread(server.kill)
            else:
                await asyncio.to_thread(server.stop)
            await asyncio.to_thread(server.start)

        label = "server restart (SIGTERM)" if how == "restart" else "server crash (SIGKILL)"
        await _server_fault_case(
            server, f"{label} + AOF replay, fsync always, x2", inject, rounds=2, bite="Redis unavailable", window=window
        )
    finally:
        server.stop()


async def test_stage_server_stalled_mid_commit(private_server):
    """SIGSTOP the server for 2.5 s (over claim_idle) three times while commits are in flight: on resume
    every entry looks idle, so consumers claim each other's live entries and handle them concurrently;
    whoever commits second must write nothing."""

    async def inject():
        private_server.pause()
        try:
            await asyncio.sleep(2.5)  # the fault itself: a 2.5 s stall
        finally:
            private_server.resume()

    await _server_fault_case(
        private_server, "server stalled 2.5s (SIGSTOP/SIGCONT) x3", inject, rounds=3, bite="idle entries"
    )


# -- a commit whose reply is lost -----------------------------------------------------


class LossyProxy:
    """A TCP proxy to a Redis server that loses some commits' replies.

    Every ``every``-th request carrying an EVALSHA (a stage's commit) is cut,
    up to ``limit`` times, alternately: after the server executed it (the
    request forwarded, the reply dropped: the commit happened, the client
    cannot know) or before (nothing forwarded: it never happened). Either way
    the connection closes and the client must resend on a new one.
    """

    def __init__(self, upstream_port: int, *, every: int, limit: int) -> None:
        self.upstream_port, self.every, self.limit = upstream_port, every, limit
        self.seen = 0
        self.executed_then_cut = 0
        self.cut_unsent = 0
        self.port = 0
        self._server: Optional[asyncio.Server] = None
        self._writers: list = []

    @property
    def cuts(self) -> int:
        return self.executed_then_cut + self.cut_unsent

    async def start(self) -> LossyProxy:
        server = self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.close()
        await self._server.wait_closed()

    async def _serve(self, client_reader, client_writer) -> None:
        server_reader, server_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        self._writers += [client_writer, server_writer]
        drop_reply = asyncio.Event()

        def cut() -> None:
            client_writer.close()
            server_writer.close()

        async def upstream():
            while data := await client_reader.read(65536):
                if b"EVALSHA" in data:
                    self.seen += 1
                    if self.cuts < self.limit and self.seen % self.every == 0:
                        if self.cuts % 2:
                            self.cut_unsent += 1
                            cut()
                            return
                        drop_reply.set()
                server_writer.write(data)
                await server_writer.drain()
            server_writer.close()

        async def downstream():
            while data := await server_reader.read(65536):
                if drop_reply.is_set():  # the commit's reply: the server ran it; the client never hears
                    self.executed_then_cut += 1
                    cut()
                    return
                client_writer.write(data)
                await client_writer.drain()
            client_writer.close()

        try:
            await asyncio.gather(upstream(), downstream())
        except (ConnectionError, OSError):
            cut()


async def test_stage_commit_reply_lost(redis_url):
    """Commits whose replies are lost on the wire (after the server ran them, or before it got them): the
    stage resends each on a new connection; a resent commit that already happened changes nothing."""
    started = time.monotonic()
    port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
    proxy = await LossyProxy(port, every=7, limit=8).start()
    proxied = redis_url.replace(f":{port}", f":{proxy.port}")
    client = redis.Redis.from_url(redis_url)
    procs = [spawn_stage(proxied, STAGE_CONCURRENCY="2")]
    producing = producer_app(redis_url)
    try:
        await ready(procs[0])
        producer = Producer(producing, "orders", **PACE)
        await producer.send(RECORDS)
        await wait_until(lambda: proxy.cuts >= proxy.limit, 30, what="every planned cut landed")
        await settle(client, "orders", 40, "every input committed after lost replies")
        await stop_gracefully(procs)
    finally:
        kill_all(procs)
        await producing.shutdown()
        await proxy.close()
    assert proxy.executed_then_cut >= 3, "no commit was executed with its reply lost: the fault did not bite"
    result = stage_tally(
        f"stage: commit reply lost x{proxy.executed_then_cut} (server ran it), request lost x{proxy.cut_unsent}",
        client,
        "orders",
        TABLE_PREFIX + "totals",
        producer.confirmed,
        started,
    )
    client.close()
    check_stage(result)
