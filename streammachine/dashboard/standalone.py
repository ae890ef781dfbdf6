"""``streammachine dashboard``: a dashboard process for a whole deployment, with no App of its own.

It is one more candidate in the election (election.py): when an App's
dashboard already serves this Redis, it waits and takes over if that one
goes away. It shows every instance in the registry. SIGINT/SIGTERM stop it.
This module imports nothing from the ``[dashboard]`` extra until it runs.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from typing import Any, Callable, Optional

from streammachine.config import Settings

log = logging.getLogger("streammachine.dashboard")


def add_command(command: Callable[[str, str], argparse.ArgumentParser]) -> None:
    """Add ``dashboard`` through cli.py's ``command(name, help)`` factory."""
    parser = command("dashboard", "serve the web dashboard of every instance on this Redis (one per Redis)")
    parser.add_argument(
        "--host", metavar="HOST", help="address to bind (default STREAMMACHINE_DASHBOARD_HOST, 127.0.0.1)"
    )
    parser.add_argument(
        "--port", type=_port, metavar="PORT", help="port (default STREAMMACHINE_DASHBOARD_PORT, 8000; 0: any free)"
    )


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a TCP port number 0-65535")
    return value


def check_options(settings: Settings, host: Optional[str]) -> None:
    """The extra is installed and the bind is allowed (ImportError / ConfigError with what to do)."""
    from streammachine.dashboard import check_bind, require_extra

    require_extra()
    check_bind(host or settings.dashboard_host, settings.dashboard_token)


def run(args: Any, settings: Settings) -> int:
    """cli.py's dispatch for ``streammachine dashboard``."""
    from streammachine.engine import loop as event_loop

    check_options(settings, args.host)
    return event_loop.run(serve(settings, host=args.host, port=args.port, redis_url=args.redis_url))


async def serve(settings: Settings, *, host: Optional[str], port: Optional[int], redis_url: Optional[str]) -> int:
    from streammachine.dashboard.candidate import DashboardCandidate
    from streammachine.engine.loop import StopSignals
    from streammachine.redis.connection import RedisConnection

    connection = RedisConnection(url=redis_url, settings=settings)
    client = await connection.get_client()
    try:
        await asyncio.wait_for(client.ping(), timeout=10)
    except Exception as exc:
        await connection.close()
        raise ConnectionError(f"cannot reach Redis at {connection.safe_url}: {exc}") from None
    candidate = DashboardCandidate(
        connection,
        host=host or settings.dashboard_host,
        port=settings.dashboard_port if port is None else port,
        token=settings.dashboard_token,
        lock_ttl=settings.dashboard_lock_ttl,
    )
    stop = asyncio.Event()
    with StopSignals(lambda _sig: stop.set(), who="dashboard"):
        await candidate.start()
        log.info("dashboard: running for election on %s (one dashboard per Redis)", connection.safe_url)
        try:
            await stop.wait()
        finally:
            await candidate.stop()
            await connection.close()
    return 0
