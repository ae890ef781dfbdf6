"""Fault injection against real servers and real processes.

Every test produces numbered records, lets handlers record each seq they
handle (a Ledger file), injects a fault while data flows, then asserts that
nothing produced was lost and that duplicates stay within what could have
been in flight. Each test adds a row to the fault table.
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

import pytest
import redis

from streammachine import App, ConsumerConfig
from streammachine.embedded import EmbeddedServer
from streammachine.redis.connection import ensure_group
from tests.helpers import wait_until

from .faultkit import Ledger, Producer, check, kill_while_producing, seq_of, tally

pytestmark = [pytest.mark.fault, pytest.mark.timeout(120)]

HERE = Path(__file__).parent
KNOBS = ConsumerConfig(count=20, block_ms=100, retry_delay_ms=50, claim_idle_ms=1000, max_deliveries=3)
# What one consumer may have in flight (re-delivered after a SIGKILL, or stolen after a stall): acks ride on
# the next XREADGROUP, so a consumer stopped while handling a read has that read's handled entries and the
# previous read's entries unacknowledged: two reads.
PER_KILL = 2 * KNOBS.count


def fault_app(url: str, name: str, **kwargs) -> App:
    kwargs.setdefault("consumer_config", KNOBS)
    kwargs.setdefault("grace_seconds", 5)
    return App(name, redis_url=url, **kwargs)


async def drain(ledger: Ledger, producer: Producer, timeout: float, what: str) -> None:
    await wait_until(
        lambda: producer.confirmed <= set(ledger.counts()),
        timeout=timeout,
        interval=0.05,
        what=f"{what}: every confirmed record handled",
    )


# -- worker processes killed ---------------------------------------------------


async def kill_under_load(
    ledger: Ledger, sending: asyncio.Future, rng: random.Random, kill_one, max_kills: int, min_kills: int = 2
) -> int:
    """Kill (``await kill_one()``) at random moments while ``sending`` runs: after a random amount of progress."""
    return await kill_while_producing(
        sending,
        kill_one,
        lambda: ledger.path.stat().st_size,
        lambda: rng.randint(500, 3000),
        timeout=15,
        max_kills=max_kills,
        min_kills=min_kills,
    )


async def test_sigkill_worker_processes_under_load(redis_url, tmp_path):
    """processes=2: SIGKILL workers at random moments; the supervisor restarts them under the same names."""
    started = time.monotonic()
    rng = random.Random(1234)
    ledger = Ledger(tmp_path / "handled")
    app = fault_app(redis_url, "kill-workers")

    @app.agent("jobs", group="g", processes=2, name="w")
    async def work(message):
        await asyncio.sleep(0.002)  # workers are the bottleneck: every kill lands with a read in flight
        ledger.record(seq_of(message))

    await app.startup()
    try:
        runner = app._runners["w"]
        await wait_until(lambda: len(runner.pids) == 2, 10, what="2 workers up")
        producer = Producer(app, "jobs", batch=25, interval=0.01)
        sending = asyncio.ensure_future(producer.send(3000))
        kills = 0
        while not sending.done() and kills < 6:
            await wait_until(lambda: len(runner.pids) == 2, 10, what="workers restarted")
            # a random moment: let the workers take some load, then kill one mid-stream
            before = ledger.path.stat().st_size
            await wait_until(
                lambda: ledger.path.stat().st_size > before + rng.randint(50, 2000) or sending.done(),
                10,
                what="progress before the next kill",
            )
            if sending.done():
                break
            os.kill(rng.choice(runner.pids), signal.SIGKILL)
            kills += 1
        await sending
        assert kills >= 3, f"only {kills} kills landed while producing"
        await drain(ledger, producer, 30, "after worker kills")
        restarts = runner.restarts
    finally:
        await app.shutdown()
    assert restarts >= kills
    result = tally(
        f"SIGKILL worker process x{kills} (processes=2)",
        producer.confirmed,
        ledger.counts(),
        bound=kills * PER_KILL + producer.ambiguous,
        started=started,
    )
    check(result)


def _spawn_app(url: str, ledger: Ledger, stream: str, *args: str, **env) -> subprocess.Popen:
    """``streammachine run fault_app.py [args]``: the real headless runner."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "STREAMMACHINE_"))}
    environ.update(
        {
            "REDIS_URL": url,
            "FAULT_STREAM": stream,
            "FAULT_LEDGER": str(ledger.path),
            "STREAMMACHINE_HOME": os.environ["STREAMMACHINE_HOME"],
            "STREAMMACHINE_EMBEDDED": "0",
            "STREAMMACHINE_COUNT": "20",
            "STREAMMACHINE_BLOCK_MS": "100",
            "STREAMMACHINE_CLAIM_IDLE_MS": "1000",
            "STREAMMACHINE_RETRY_DELAY_MS": "50",
            "STREAMMACHINE_GRACE_SECONDS": "5",
            **env,
        }
    )
    command = [sys.executable, "-m", "streammachine", "run", str(HERE / "fault_app.py"), *args]
    return subprocess.Popen(
        command, env=environ, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


async def _ready(proc: subprocess.Popen) -> None:
    line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 30)
    if b"READY" not in line:
        raise AssertionError(f"fault app did not start: {line!r} {proc.stderr.read().decode(errors='replace')[-3000:]}")


async def test_sigkill_headless_app_processes(redis_url, tmp_path):
    """Two `streammachine run` processes; SIGKILL one at random moments and start a new one (new consumer
    names): the dead one's pending entries are reclaimed by the others (XAUTOCLAIM); SIGTERM at the end is
    graceful (exit 0)."""
    started = time.monotonic()
    rng = random.Random(99)
    ledger = Ledger(tmp_path / "handled")
    client = redis.Redis.from_url(redis_url)
    await ensure_group(_AsyncShim(client), "orders", "faults", "0")
    procs = [_spawn_app(redis_url, ledger, "orders", FAULT_SLOW_MS="1") for _ in range(2)]
    producer_app = fault_app(redis_url, "producer")
    try:
        for proc in procs:
            await _ready(proc)
        # ~300 records/s: each kill waits for its replacement to start (seconds on a loaded machine)
        producer = Producer(producer_app, "orders", batch=10, interval=0.03)
        sending = asyncio.ensure_future(producer.send(3000))

        async def kill_one():
            victim = procs.pop(rng.randrange(len(procs)))
            victim.kill()
            victim.wait(5)
            procs.append(_spawn_app(redis_url, ledger, "orders", FAULT_SLOW_MS="1"))
            await _ready(procs[-1])

        kills = await kill_under_load(ledger, sending, rng, kill_one, max_kills=3)
        await drain(ledger, producer, 40, "after app process kills")
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        codes = [await asyncio.to_thread(proc.wait, 15) for proc in procs]
        assert codes == [0] * len(procs), f"graceful SIGTERM exit codes {codes}"
        pending = client.xpending("orders", "faults")["pending"]
        assert pending == 0, f"{pending} entries left pending after everything was handled and stopped"
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        await producer_app.shutdown()
        client.close()
    result = tally(
        f"SIGKILL `streammachine run` process x{kills}",
        producer.confirmed,
        ledger.counts(),
        bound=kills * PER_KILL + producer.ambiguous,
        started=started,
    )
    check(result)


async def test_sigkill_workers_of_streammachine_run_supervisor(redis_url, tmp_path):
    """`streammachine run --workers 2`: SIGKILL its worker processes at random moments; the supervisor starts
    new ones, the dead ones' entries are reclaimed; SIGTERM to the supervisor stops everything gracefully."""
    import psutil

    started = time.monotonic()
    rng = random.Random(7)
    ledger = Ledger(tmp_path / "handled")
    client = redis.Redis.from_url(redis_url)
    await ensure_group(_AsyncShim(client), "payments", "faults", "0")
    supervisor = _spawn_app(redis_url, ledger, "payments", "--workers", "2", FAULT_SLOW_MS="1")
    producer_app = fault_app(redis_url, "producer")

    def workers():
        try:
            return [
                p
                for p in psutil.Process(supervisor.pid).children()
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE and "--worker-index" in p.cmdline()
            ]
        except psutil.NoSuchProcess:
            return []

    try:
        await wait_until(
            lambda: len(workers()) == 2 and len(client.xinfo_consumers("payments", "faults")) >= 2,
            60,
            what="2 workers consuming",
        )
        producer = Producer(producer_app, "payments", batch=20, interval=0.01)
        sending = asyncio.ensure_future(producer.send(3000))

        async def kill_one():
            rng.choice(workers()).kill()
            await wait_until(lambda: len(workers()) == 2, 30, what="supervisor restarted the worker")

        kills = await kill_under_load(ledger, sending, rng, kill_one, max_kills=3)
        await drain(ledger, producer, 40, "after killing run --workers workers")
        supervisor.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(supervisor.wait, 30)
        assert code == 0, f"supervisor exit code {code}: {supervisor.stderr.read().decode(errors='replace')[-2000:]}"
        assert client.xpending("payments", "faults")["pending"] == 0
    finally:
        if supervisor.poll() is None:
            for child in workers():
                child.kill()
            supervisor.kill()
            supervisor.wait()
        await producer_app.shutdown()
        client.close()
    result = tally(
        f"SIGKILL `streammachine run --workers 2` worker x{kills}",
        producer.confirmed,
        ledger.counts(),
        bound=kills * PER_KILL + producer.ambiguous,
        started=started,
    )
    check(result)


class _AsyncShim:
    """ensure_group() wants an async client; the fault app processes need the group before they start."""

    def __init__(self, client) -> None:
        self.client = client

    async def xinfo_groups(self, *args, **kwargs):
        return self.client.xinfo_groups(*args, **kwargs)

    async def xgroup_create(self, *args, **kwargs):
        return self.client.xgroup_create(*args, **kwargs)


# -- the server under fault ----------------------------------------------------


async def _server_outage_case(server: EmbeddedServer, tmp_path, fault: str, outage) -> None:
    started = time.monotonic()
    ledger = Ledger(tmp_path / "handled")
    app = fault_app(server.url, fault)

    @app.agent("ticks", group="g", concurrency=2, name="w")
    async def work(message):
        ledger.record(seq_of(message))

    await app.startup()
    try:
        producer = Producer(app, "ticks", batch=20, interval=0.005)
        await producer.send(600)
        await wait_until(lambda: ledger.unique() > 300, 15, what="consumers running before the outage")
        sending = asyncio.ensure_future(producer.send(1200))
        await wait_until(lambda: producer.next_seq > 900, 15, what="producer mid-stream")
        await outage(app)
        await sending
        await drain(ledger, producer, 30, f"after {fault}")
        reconnects = app.stats("w").reconnects
    finally:
        await app.shutdown()
    assert reconnects > 0, "the consumers never saw the outage: the fault did not bite"
    result = tally(fault, producer.confirmed, ledger.counts(), bound=2 * PER_KILL + producer.ambiguous, started=started)
    check(result)


async def test_server_stopped_and_started_midstream(private_server, tmp_path):
    async def outage(app):
        await asyncio.to_thread(private_server.stop)
        await wait_until(lambda: app.stats("w").reconnects > 0, 10, what="consumers notice the outage")
        await asyncio.to_thread(private_server.start)

    await _server_outage_case(private_server, tmp_path, "server stop, start again (AOF replay)", outage)


async def test_server_restart_with_aof_midstream(private_server, tmp_path):
    async def outage(app):
        await asyncio.to_thread(private_server.restart)

    await _server_outage_case(private_server, tmp_path, "server restart() mid-stream (AOF)", outage)


async def test_server_crash_sigkill_with_fsync_always(tmp_path):
    """A crash (SIGKILL) of the server: with appendfsync always nothing it confirmed is lost on our side either."""
    server = EmbeddedServer(tmp_path / "crashy", extra_args=["--appendfsync", "always"]).start()
    try:

        async def outage(app):
            await asyncio.to_thread(server.kill)
            await wait_until(lambda: app.stats("w").reconnects > 0, 10, what="consumers notice the crash")
            await asyncio.to_thread(server.start)

        await _server_outage_case(server, tmp_path, "server SIGKILL + restart (fsync always)", outage)
    finally:
        server.stop()


async def test_network_stall_sigstop(private_server, tmp_path):
    """SIGSTOP the server for 2.5 s (longer than claim_idle): everyone stalls, nothing is lost; idle times jump
    on resume, so some live entries may be claimed by a peer: duplicates stay within what was in flight."""
    started = time.monotonic()
    ledger = Ledger(tmp_path / "handled")
    app = fault_app(private_server.url, "stall")

    @app.agent("ticks", group="g", concurrency=3, name="w")
    async def work(message):
        await asyncio.sleep(0.001)
        ledger.record(seq_of(message))

    await app.startup()
    try:
        producer = Producer(app, "ticks", batch=20, interval=0.005)
        sending = asyncio.ensure_future(producer.send(1500))
        await wait_until(lambda: ledger.unique() > 400, 15, what="flow before the stall")
        private_server.pause()
        try:
            stalled_at = ledger.unique()
            await asyncio.sleep(2.5)  # the fault itself: a 2.5 s stall
            assert ledger.unique() - stalled_at <= 3 * KNOBS.count, "work went on while the server was frozen"
        finally:
            private_server.resume()
        await sending
        await drain(ledger, producer, 30, "after the stall")
    finally:
        await app.shutdown()
    result = tally(
        "network stall 2.5s (SIGSTOP/SIGCONT), 3 consumers",
        producer.confirmed,
        ledger.counts(),
        bound=3 * PER_KILL + producer.ambiguous,
        started=started,
    )
    check(result)


# -- bad data and slow work ----------------------------------------------------


async def test_poison_messages_dead_lettered_rest_processed(redis_url, sync_redis, tmp_path):
    started = time.monotonic()
    ledger = Ledger(tmp_path / "handled")
    app = fault_app(redis_url, "poison")
    poison = set(range(7, 1000, 37))

    @app.agent("orders", group="g", concurrency=2, name="w")
    async def work(message):
        seq = seq_of(message)
        if seq in poison:
            raise ValueError(f"poison record {seq}")
        ledger.record(seq)

    await app.startup()
    try:
        producer = Producer(app, "orders", batch=50, interval=0.0)
        await producer.send(1000)
        await wait_until(
            lambda: sync_redis.xlen("orders:dead") >= len(poison) and ledger.unique() >= 1000 - len(poison),
            30,
            what="all handled or dead-lettered",
        )
        await wait_until(lambda: sync_redis.xpending("orders", "g")["pending"] == 0, 10, what="nothing pending")
        stats = app.stats("w")
    finally:
        await app.shutdown()
    dead = sync_redis.xrange("orders:dead")
    dead_seqs = [int(fields["seq"]) for _, fields in dead]
    assert set(dead_seqs) == poison
    assert all(fields["_dlq_error"].startswith("ValueError: poison record") for _, fields in dead)
    assert all(int(fields["_dlq_deliveries"]) == KNOBS.max_deliveries for _, fields in dead)
    assert not poison & set(ledger.counts()), "a poison record was recorded as handled"
    assert stats.dead_lettered == len(poison)
    result = tally(
        f"poison records ({len(poison)} of 1000) -> dead letter",
        producer.confirmed,
        ledger.counts(),
        bound=producer.ambiguous,
        started=started,
        extra_handled=dead_seqs,
    )
    check(result)


async def _slow_case(url, tmp_path, fault: str, handler_kind: str, claim_idle_ms: int, bound: int) -> None:
    """Handlers slower than claim_idle_ms with several consumers: keep-alive must stop a re-delivery storm."""
    started = time.monotonic()
    ledger = Ledger(tmp_path / "handled")
    knobs = KNOBS.replace(count=3, claim_idle_ms=claim_idle_ms)
    app = fault_app(url, "slow", consumer_config=knobs)
    consumers = 3
    if handler_kind == "async":

        @app.agent("slow", group="g", concurrency=consumers, name="w")
        async def work(message):
            await asyncio.sleep(0.4)
            ledger.record(seq_of(message))
    else:

        @app.agent("slow", group="g", processes=consumers, name="w", threaded=handler_kind == "threaded")
        def work(message):  # inline, blocks its worker's event loop (and so its keep-alive) for 0.4 s
            time.sleep(0.4)  # the simulated blocking work itself, not a wait
            ledger.record(seq_of(message))

    await app.startup()
    try:
        producer = Producer(app, "slow", batch=6, interval=0.0)
        await producer.send(36)
        await drain(ledger, producer, 40, fault)
    finally:
        await app.shutdown()
    result = tally(fault, producer.confirmed, ledger.counts(), bound=bound, started=started)
    check(result)


async def test_slow_async_handlers_exceed_claim_idle(redis_url, tmp_path):
    # the keep-alive runs beside an async handler: no entry in hand may be stolen at all
    await _slow_case(
        redis_url,
        tmp_path,
        "slow async handlers 400ms > claim_idle 300ms, 3 consumers",
        "async",
        claim_idle_ms=300,
        bound=0,
    )


async def test_slow_blocking_handlers_within_documented_rule(redis_url, tmp_path):
    # a blocking handler stalls its loop's keep-alive: claim_idle_ms must exceed one read's work
    # (count x 0.4 s = 1.2 s here); then nothing is stolen from live workers
    await _slow_case(
        redis_url,
        tmp_path,
        "slow blocking handlers 400ms, claim_idle 2000ms > batch, 3 processes",
        "sync",
        claim_idle_ms=2000,
        bound=0,
    )


async def test_slow_blocking_handlers_misconfigured_claim_idle(redis_url, tmp_path):
    """Known limit: a blocking handler longer than claim_idle_ms cannot keep its entries, so peers re-deliver
    them (duplicates grow with the run). At-least-once still holds: nothing is lost."""
    # no in-flight bound here: every record may be re-delivered once per consumer
    await _slow_case(
        redis_url,
        tmp_path,
        "KNOWN LIMIT: blocking handlers 400ms > claim_idle 300ms, 3 processes",
        "sync",
        claim_idle_ms=300,
        bound=36 * 3,
    )


async def test_slow_blocking_handlers_threaded(redis_url, tmp_path):
    # threaded=True runs the blocking handler in a thread: the loop and its keep-alive stay live, so even
    # claim_idle_ms below one handler's time steals nothing
    await _slow_case(
        redis_url,
        tmp_path,
        "slow blocking handlers 400ms > claim_idle 300ms, threaded=True, 3 processes",
        "threaded",
        claim_idle_ms=300,
        bound=0,
    )


# -- a cluster node under fault -----------------------------------------------------


async def test_cluster_master_restart_midstream(tmp_path):
    """A 3-master cluster, one stream per master: restart one master (AOF + nodes.conf) mid-stream. Its
    stream stalls and resumes; the others never stop; nothing is lost."""
    from redis.crc import key_slot

    from streammachine.testing import LocalCluster

    started = time.monotonic()
    streams = []
    for n in range(64):  # one hash-tagged stream per master (slots split evenly by LocalCluster)
        name = "{f%d}" % n
        if key_slot(name.encode()) * 3 // 16384 == len(streams):
            streams.append(name)
        if len(streams) == 3:
            break
    ledger = Ledger(tmp_path / "handled")
    with LocalCluster(tmp_path / "cluster", masters=3) as cluster:
        app = fault_app(cluster.url, "cluster-fault")
        for stream in streams:

            @app.agent(stream, group="g", name=f"w{stream}")
            async def work(message):
                ledger.record(seq_of(message))

        await app.startup()
        try:
            producers = [Producer(app, stream, batch=20, interval=0.005) for stream in streams]
            for offset, producer in enumerate(producers):  # disjoint seqs per stream
                producer.next_seq = offset * 1_000_000
            sending = asyncio.gather(*(p.send(600, deadline=90) for p in producers))
            await wait_until(lambda: ledger.unique() > 300, 20, what="flow before the restart")
            victim = cluster.nodes[1]  # owns streams[1]
            await asyncio.to_thread(victim.stop)
            others_before = sum(1 for s in ledger.counts() if s < 1_000_000 or s >= 2_000_000)
            # the cluster client retries a lost node for a while: keep it down until clients see it
            await wait_until(
                lambda: producers[1].failures > 0 and app.stats(f"w{streams[1]}").reconnects > 0,
                30,
                what="the outage seen by the producer and the agent of the stopped master",
            )
            await wait_until(
                lambda: sum(1 for s in ledger.counts() if s < 1_000_000 or s >= 2_000_000) > others_before + 100,
                20,
                what="the other masters' streams keep flowing",
            )
            await asyncio.to_thread(victim.start)
            await sending
            confirmed = set().union(*(p.confirmed for p in producers))
            await wait_until(
                lambda: confirmed <= set(ledger.counts()),
                60,
                interval=0.1,
                what="every confirmed record handled after the master came back",
            )
            ambiguous = sum(p.ambiguous for p in producers)
        finally:
            await app.shutdown()
    result = tally(
        "cluster: one of 3 masters stopped and restarted mid-stream",
        confirmed,
        ledger.counts(),
        bound=3 * PER_KILL + ambiguous,
        started=started,
    )
    check(result)
