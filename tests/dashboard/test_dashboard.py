"""The web dashboard in-process: real valkey, real uvicorn on the test's loop, httpx.

API shapes (the upstream endpoint names), the instances registry (a stop
deletes the entry, an expired heartbeat disappears), the election's
ownership rules on two real clients, token enforcement, the probes flipping
when Redis stops (dashboard and --metrics-port), and no password in any response.
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import time

import httpx
import pytest
import redis.asyncio as aioredis

from streammachine import App
from streammachine.config import ConfigError, Settings
from streammachine.dashboard.election import LOCK_KEY, Election
from streammachine.engine.instances import INDEX, instance_key, list_instances
from streammachine.testing import FAST
from tests.helpers import wait_until

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
pytest.importorskip("sse_starlette")

FAST_REGISTRY = {"heartbeat_seconds": 0.2, "instance_ttl": 1.0, "dashboard_lock_ttl": 1.5}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def fast_settings(**changes) -> Settings:
    return dataclasses.replace(Settings.from_env(), **{**FAST_REGISTRY, **changes})


async def dashboard_app(url: str, name: str = "dash", settings: Settings | None = None, **kwargs) -> App:
    port = free_port()
    app = App(
        name, redis_url=url, consumer_config=FAST, grace_seconds=2, settings=settings or fast_settings(), **kwargs
    )
    app.enable_dashboard(port)

    @app.agent("orders", group="billing")
    async def bill(msg):
        if msg.message.get("poison"):
            raise ValueError("poison order")

    @app.timer(0.1)
    async def tick():
        pass

    await app.start()
    await wait_until(lambda: app.dashboard_candidate.serving is not None, timeout=10, what="the dashboard serving")
    return app


def base(app: App) -> str:
    return f"http://127.0.0.1:{app.dashboard_candidate.serving.port}"


async def test_api_shapes_and_no_password(tmp_path):
    from streammachine.embedded import EmbeddedServer

    with EmbeddedServer(tmp_path / "pw", password="s3cret-pass") as server:  # a URL with a password in it
        assert "s3cret-pass" in server.url
        app = await dashboard_app(server.url)
        try:
            await app.send_batch("orders", [{"n": str(i), "note": "x" * 500} for i in range(30)])
            await wait_until(lambda: app.stats("bill").processed == 30, what="30 orders handled")
            async with httpx.AsyncClient(base_url=base(app)) as http:
                responses = {}
                for path in (
                    "/api/health",
                    "/api/instances",
                    "/api/agents",
                    "/api/timers",
                    "/api/storage",
                    "/api/streams",
                ):
                    response = await http.get(path)
                    assert response.status_code == 200, (path, response.text)
                    responses[path] = response
                health = responses["/api/health"].json()
                assert health["status"] == "ok" and health["redis"] == "connected" and health["instances"] == 1
                assert health["dashboard"]["owner"]["instance"] == app.instance.id

                [instance] = responses["/api/instances"].json()
                assert {"id", "name", "host", "pid", "started", "version", "agents", "timers", "heartbeat"} <= set(
                    instance
                )
                assert instance["id"] == app.instance.id and instance["pid"] == __import__("os").getpid()
                [agent] = instance["agents"]
                assert {
                    "stream",
                    "group",
                    "concurrency",
                    "processed",
                    "failed",
                    "dead_lettered",
                    "rate",
                    "handler_ms",
                } <= set(agent)
                assert (agent["stream"], agent["group"], agent["concurrency"]) == ("orders", "billing", 1)
                [timer] = instance["timers"]
                assert {"interval", "runs", "last_error"} <= set(timer) and timer["interval"] == 0.1

                await wait_until(
                    lambda: _processed(http, app.instance.id), timeout=5, what="a heartbeat with the 30 orders"
                )
                detail = (await http.get(f"/api/instance/{app.instance.id}")).json()
                assert detail["agents"][0]["pending"] == 0 and detail["agents"][0]["lag"] == 0
                missing = await http.get("/api/instance/nobody@nowhere:1")
                assert missing.status_code == 404 and "no live instance" in missing.json()["error"]

                [row] = responses["/api/agents"].json()
                assert row["instance"] == app.instance.id and row["pending"] == 0
                assert responses["/api/timers"].json()[0]["name"].endswith("tick")
                streams = {s["stream"]: s for s in responses["/api/streams"].json()}
                assert streams["orders"]["length"] == 30 and streams["orders"]["groups"][0]["name"] == "billing"
                assert not any(name.startswith("{streammachine}") for name in streams)  # the registry is no stream

                page = (await http.get("/api/streams/orders/entries", params={"count": 5})).json()
                assert page["count"] == 5 and page["entries"][0]["fields"]["n"] == "29"  # newest first
                assert page["entries"][0]["fields"]["note"].startswith("x" * 200 + "…")  # truncated
                first, last = streams["orders"]["first_id"], page["entries"][2]["id"]
                ranged = (await http.get("/api/streams/orders/entries", params={"start": first, "end": last})).json()
                assert [e["fields"]["n"] for e in ranged["entries"]] == [str(i) for i in range(28)]
                bad = await http.get("/api/streams/orders/entries", params={"count": "lots"})
                assert bad.status_code == 400 and "count='lots'" in bad.json()["error"]
                assert (await http.get("/api/streams/nope/entries")).status_code == 404

                [group] = (await http.get("/api/streams/orders/groups")).json()
                [consumer] = group["consumers_list"]
                assert group["name"] == "billing" and {"name", "pending", "idle"} <= set(consumer)

                async with http.stream("GET", "/api/events") as events:  # one SSE stream of live frames
                    frame = await _first_live_frame(events)
                assert frame["instances"][0]["id"] == app.instance.id
                assert frame["groups"][0]["stream"] == "orders" and "lag" in frame["groups"][0]
                assert frame["consumers"][0]["group"] == "billing"

                everything = " ".join(r.text for r in responses.values()) + str(health) + str(detail)
                assert "s3cret-pass" not in everything
                assert (await http.get("/")).status_code == 200
                assert (await http.get("/static/plotly.min.js")).status_code == 200  # served here, not a CDN
                assert (await http.get("/static/../api.py")).status_code == 404
        finally:
            await app.stop()


async def _processed(http: httpx.AsyncClient, instance_id: str) -> bool:
    record = (await http.get(f"/api/instance/{instance_id}")).json()
    return record["agents"][0]["processed"] == 30


async def _first_live_frame(events) -> dict:
    import json

    event = None
    async for line in events.aiter_lines():
        if line.startswith("event:"):
            event = line.split(":", 1)[1].strip()
        elif line.startswith("data:") and event == "live":
            return json.loads(line.split(":", 1)[1])
    raise AssertionError("no live frame")


async def test_registry_entry_deleted_on_stop_and_expires_without_heartbeat(redis_url):
    client = aioredis.Redis.from_url(redis_url)
    app = App("registered", redis_url=redis_url, settings=fast_settings())

    @app.agent("jobs")
    async def job(msg):
        pass

    await app.start()
    [entry] = await list_instances(client)
    assert entry["name"] == "registered" and entry["agents"][0]["stream"] == "jobs"
    beats = app.instance.beats
    await wait_until(lambda: app.instance.beats >= beats + 3, what="heartbeats")
    await app.stop()
    assert await list_instances(client) == []  # a clean stop deletes the entry at once
    assert await client.zcard(INDEX) == 0

    # a process that dies cannot delete its entry: it disappears once its TTL runs out
    await app.start()
    instance = app.instance
    instance._task.cancel()  # heartbeats stop, as in a killed process
    stopped_at = time.monotonic()
    assert [e["id"] for e in await list_instances(client)] == [instance.id]
    await wait_until(lambda: _gone(client), timeout=5, what="the expired entry gone")
    assert time.monotonic() - stopped_at >= 0.5  # it did live on until (about) its TTL
    # the key's own TTL (the server's clock) ends within moments of the index's expiry (the writer's clock)
    await wait_until(lambda: _key_gone(client, instance.id), timeout=2, what="the expired key gone")
    await app.stop()
    await client.aclose()


async def _gone(client) -> bool:
    return await list_instances(client) == []


async def _key_gone(client, instance_id: str) -> bool:
    return await client.get(instance_key(instance_id)) is None


async def test_registry_off_writes_nothing(redis_url):
    client = aioredis.Redis.from_url(redis_url)
    app = App("silent", redis_url=redis_url, settings=fast_settings(heartbeat_seconds=0))
    await app.start()
    assert app.instance is None and await client.exists(INDEX) == 0
    await app.stop()
    await client.aclose()


async def test_election_token_compare_on_renew_and_release(redis_url):
    first, second = aioredis.Redis.from_url(redis_url), aioredis.Redis.from_url(redis_url)
    a, b = Election(first, 0.5, {"instance": "a"}), Election(second, 0.5, {"instance": "b"})
    assert await a.try_acquire() and not await b.try_acquire()  # one holder
    assert await a.renew() and not await b.try_acquire()
    await wait_until(lambda: _expired(first), timeout=3, what="a's lease expired")  # a stopped renewing (a pause)
    assert await b.try_acquire()
    assert not await a.renew()  # a's token no longer matches: it cannot extend b's lock
    await a.release()  # nor delete it
    assert await second.get(LOCK_KEY) is not None and await b.renew()
    await b.release()
    assert await second.get(LOCK_KEY) is None
    await first.aclose()
    await second.aclose()


async def _expired(client) -> bool:
    return await client.get(LOCK_KEY) is None


async def test_two_dashboard_apps_one_serves_then_the_other_takes_over(redis_url):
    first = await dashboard_app(redis_url, "first")
    second = App("second", redis_url=redis_url, settings=fast_settings())
    second.enable_dashboard(free_port())
    await second.start()
    try:
        await asyncio.sleep(0)  # the second's campaign has run at least once by the checks below
        await wait_until(lambda: second.dashboard_candidate._election is not None, what="second campaigning")
        assert second.dashboard_candidate.serving is None  # never two at once
        await first.stop()  # releases the lock: the second takes over well within the TTL
        await wait_until(lambda: second.dashboard_candidate.serving is not None, timeout=5, what="takeover")
        async with httpx.AsyncClient(base_url=base(second)) as http:
            assert (await http.get("/api/health")).json()["dashboard"]["owner"]["instance"] == second.instance.id
    finally:
        await second.stop()
        await first.stop()


async def test_token_enforcement(redis_url):
    app = await dashboard_app(redis_url, settings=fast_settings(dashboard_token="t0ken-for-tests"))
    try:
        async with httpx.AsyncClient(base_url=base(app)) as http:
            assert (await http.get("/api/instances")).status_code == 401
            wrong = await http.get("/api/instances", headers={"Authorization": "Bearer nope"})
            assert wrong.status_code == 401 and "STREAMMACHINE_DASHBOARD_TOKEN" in wrong.json()["error"]
            assert (
                await http.get("/api/instances", headers={"Authorization": "Bearer t0ken-for-tests"})
            ).status_code == 200
            # the page's login: the server sets the cookie HttpOnly (no script can read it) for EventSource
            assert (await http.post("/api/session", headers={"Authorization": "Bearer nope"})).status_code == 401
            assert not http.cookies
            session = await http.post("/api/session", headers={"Authorization": "Bearer t0ken-for-tests"})
            assert session.status_code == 204
            set_cookie = session.headers["set-cookie"].lower()
            assert "httponly" in set_cookie and "samesite=strict" in set_cookie and "path=/" in set_cookie
            assert "secure" not in set_cookie  # plain http on loopback: a Secure cookie would never come back
            assert http.cookies["streammachine_dashboard"] == "t0ken-for-tests"
            assert (await http.get("/api/instances")).status_code == 200
            http.cookies.clear()
            assert (await http.get("/healthz")).status_code == 200  # probes and the page stay open
            assert (await http.get("/")).status_code == 200
            # a write needs the header even with the cookie
            http.cookies.set("streammachine_dashboard", "t0ken-for-tests")
            assert (await http.post("/api/instances")).status_code == 401
            rebound = await http.get(
                "/api/health", headers={"Host": "evil.example:80", "Authorization": "Bearer t0ken-for-tests"}
            )
            assert rebound.status_code == 421  # DNS rebinding onto a loopback dashboard
    finally:
        await app.stop()
    open_app = await dashboard_app(redis_url, "open")
    try:
        async with httpx.AsyncClient(base_url=base(open_app)) as http:
            assert (await http.get("/api/instances")).status_code == 200  # loopback, no token: reads are open
            refused = await http.post("/api/instances")
            assert refused.status_code == 403 and "STREAMMACHINE_DASHBOARD_TOKEN" in refused.json()["error"]
    finally:
        await open_app.stop()


def test_non_loopback_bind_needs_a_token_and_missing_extra_is_named(monkeypatch):
    settings = dataclasses.replace(Settings.from_env(), dashboard_host="0.0.0.0")
    with pytest.raises(ConfigError, match="STREAMMACHINE_DASHBOARD_TOKEN"):
        App("exposed", settings=settings, dashboard_enabled=True)
    App("exposed-ok", settings=dataclasses.replace(settings, dashboard_token="x" * 32), dashboard_enabled=True)
    with pytest.raises(ConfigError, match="dashboard_port=70000"):
        App("bad-port", dashboard_port=70000)
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "sse_starlette" else real(name, *a)
    )
    with pytest.raises(ImportError, match=r"pip install 'streammachine\[dashboard\]'"):
        App("no-extra", dashboard_enabled=True)


async def test_probes_flip_when_redis_stops(private_server):
    from streammachine.headless.metrics import LiveSource, serve_metrics

    app = await dashboard_app(private_server.url, settings=fast_settings(dashboard_lock_ttl=30))
    metrics = serve_metrics(LiveSource(app, asyncio.get_running_loop(), timeout=5), 0)
    metrics_base = f"http://127.0.0.1:{metrics.server_port}"
    try:
        async with httpx.AsyncClient(timeout=10) as http:
            for root in (base(app), metrics_base):
                assert (await http.get(root + "/healthz")).status_code == 200
                ready = await http.get(root + "/readyz")
                assert ready.status_code == 200 and ready.json()["status"] == "ready", ready.text
            private_server.stop()
            for root in (base(app), metrics_base):
                await wait_until(lambda r=root: _status(http, r + "/readyz", 503), timeout=15, what=f"{root} not ready")
                not_ready = await http.get(root + "/readyz")
                assert "redis" in " ".join(not_ready.json()["reasons"])
                assert (await http.get(root + "/healthz")).status_code == 200  # the loop still answers
            private_server.start()
            for root in (base(app), metrics_base):
                await wait_until(
                    lambda r=root: _status(http, r + "/readyz", 200), timeout=20, what=f"{root} ready again"
                )
    finally:
        metrics.shutdown()
        await app.stop()


async def _status(http: httpx.AsyncClient, url: str, expected: int) -> bool:
    return (await http.get(url)).status_code == expected


async def test_dead_letters_replayed_from_the_dashboard_after_a_hot_swap(redis_url, sync_redis):
    token = "dlq-t0ken"
    app = App("dlq", redis_url=redis_url, grace_seconds=2, settings=fast_settings(dashboard_token=token))
    app.enable_dashboard(free_port())
    handled: list = []

    @app.agent("payments", group="ledger", name="pay", count=50, block_ms=100, on_error="dead_letter")
    async def broken(msg):
        if msg.message.get("poison"):
            raise ValueError("cannot parse amount")
        handled.append(msg.message["n"])

    await app.start()
    try:
        await wait_until(lambda: app.dashboard_candidate.serving is not None, what="the dashboard serving")
        await app.send_batch("payments", [{"n": str(i), **({"poison": "1"} if i % 2 else {})} for i in range(10)])
        await wait_until(lambda: app.stats("pay").dead_lettered == 5 and len(handled) == 5, what="5 dead letters")

        @app.agent("payments", group="ledger", name="pay", count=50, block_ms=100, on_error="dead_letter")
        async def fixed(msg):  # the hot swap: same name, the bug fixed
            handled.append(msg.message["n"])

        auth = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(base_url=base(app), headers=auth) as http:
            [dead] = (await http.get("/api/deadletters")).json()
            assert dead == {"dead_letter_stream": "payments:dead", "stream": "payments", "count": 5}
            listing = (await http.get("/api/deadletters/payments")).json()
            first = listing["dead_letters"][0]
            assert listing["count"] == 5 and first["error"].startswith("ValueError: cannot parse amount")
            assert first["agent"].endswith("pay") and first["fields"]["poison"] == "1" and first["stream"] == "payments"
            shown = (await http.get(f"/api/deadletters/payments/entry/{first['id']}")).json()
            assert shown["original_id"] == first["original_id"]

            no_token = await http.post(
                "/api/deadletters/payments/replay", json={"confirm": True}, headers={"Authorization": ""}
            )
            assert no_token.status_code == 401
            unconfirmed = await http.post("/api/deadletters/payments/replay", json={"ids": None})
            assert unconfirmed.status_code == 400 and '"confirm": true' in unconfirmed.json()["error"]
            unknown = await http.post("/api/deadletters/payments/replay", json={"ids": ["1-1"], "confirm": True})
            assert unknown.status_code == 404
            assert sync_redis.xlen("payments:dead") == 5  # refused requests changed nothing

            result = (await http.post("/api/deadletters/payments/replay", json={"ids": None, "confirm": True})).json()
            assert len(result["replayed"]) == 5 and result["missing"] == []
        await wait_until(lambda: len(handled) == 10, what="the replayed entries handled by the fixed handler")
        assert sorted(handled, key=int) == [str(i) for i in range(10)]  # each entry handled once: none lost or doubled
        assert sync_redis.xlen("payments:dead") == 0

        await app.send("payments", {"n": "x"})  # purge: a dead letter made by hand, deleted from the page's API
        sync_redis.xadd("payments:dead", {"n": "y", "_dlq_stream": "payments", "_dlq_error": "manual"})
        async with httpx.AsyncClient(base_url=base(app), headers={"Authorization": f"Bearer {token}"}) as http:
            [letter] = (await http.get("/api/deadletters/payments")).json()["dead_letters"]
            purged = await http.post("/api/deadletters/payments/purge", json={"ids": [letter["id"]], "confirm": True})
            assert purged.json() == {"purged": 1}
        assert sync_redis.xlen("payments:dead") == 0
    finally:
        await app.stop()
