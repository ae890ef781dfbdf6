"""StreamMachine's pytest plugin (entry point ``pytest11``): fixtures for testing pipelines on a real server.

A top-level module, not part of the ``streammachine`` package, so that pytest
loading it in every run (entry-point plugins load at start-up) costs nothing:
StreamMachine is imported only by a test that uses a fixture.

- ``streammachine_server``: one embedded ``valkey-server`` per test session.
- ``streammachine_harness``: a ``Harness`` on that server, emptied for each
  test (FLUSHALL), not started: ``await streammachine_harness.start(app)``
  runs your App there (or the first ``send``/``drain`` starts the harness's
  own App, ``streammachine_harness.app``). After the test the App is stopped
  and the server left running, unfrozen, for the next one. Needs
  pytest-asyncio (async fixtures).

::

    async def test_billing(streammachine_harness):
        h = await streammachine_harness.start(app)
        await h.send("orders", {"item": "book", "qty": 2})
        await h.drain()
        assert len(await h.messages("invoices")) == 1
"""

from __future__ import annotations

from typing import Any

import pytest


def _ready(server: Any) -> None:
    """The shared server as the next test expects it: running, not frozen, empty."""
    import redis

    if not server.is_running():
        server.start()
    server.resume()
    client = redis.Redis.from_url(server.url)
    try:
        client.flushall()
    finally:
        client.close()


@pytest.fixture(scope="session")
def streammachine_server(tmp_path_factory: Any) -> Any:
    """A private embedded valkey-server for the session (real PEL, XAUTOCLAIM, AOF)."""
    from streammachine.embedded import EmbeddedServer

    server = EmbeddedServer(tmp_path_factory.mktemp("streammachine-valkey")).start()
    yield server
    server.stop()


try:
    import pytest_asyncio
except ImportError:  # pragma: no cover - the fixture needs it; the server fixture does not
    pytest_asyncio = None

if pytest_asyncio is not None:

    @pytest_asyncio.fixture
    async def streammachine_harness(streammachine_server: Any) -> Any:
        """A Harness on the session's server, emptied for this test (see the module doc)."""
        from streammachine.testkit.harness import Harness

        _ready(streammachine_server)
        harness = Harness(server=streammachine_server)
        try:
            yield harness
        finally:
            await harness.stop()
            _ready(streammachine_server)
