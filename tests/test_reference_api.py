"""The contract, read off the reference (shared/spec/reference-api.md): every name, parameter and default it shows.

Behaviour is tested module by module; this file pins the shape a user copies from the reference, so a
renamed parameter or a changed default fails here first. Where StreamMachine resolves a default later
(``group=None`` means ``STREAMMACHINE_DEFAULT_GROUP``, which defaults to ``eventengine``), the test
checks the resolved value too.
"""

from __future__ import annotations

import inspect

import pytest

import streammachine
from streammachine import App, Message, RedisConnection, Storage
from streammachine.config import AppConfig, Settings

CORE_IMPORTS = """
App StreamConsumer Message AppConfig ConsumerConfig TimerConfig Storage RedisConnection streams_to_dataframe
streams_to_dataframe_fast prune_old_dataframe_rows TimeSeriesBuffer FastOHLC FastOHLCConsumer create_ohlc_aggregator
parse_stream_id_timestamp format_candle_for_redis _HAS_FAST_OHLC_CYTHON RedisObjectStorage decode_dict_bytes_to_utf8
_has_cython_decode
""".split()


def parameters(func) -> dict:
    """name -> default (``inspect.Parameter.empty`` when required), without ``self``."""
    return {n: p.default for n, p in inspect.signature(func).parameters.items() if n != "self"}


def assert_leading(func, expected: dict) -> None:
    """``func`` takes ``expected``'s parameters first, in that order, with those defaults."""
    actual = list(parameters(func).items())[: len(expected)]
    assert actual == list(expected.items()), f"{func.__qualname__}: {actual} != {list(expected.items())}"


REQUIRED = inspect.Parameter.empty


@pytest.mark.parametrize("name", CORE_IMPORTS)
def test_core_imports(name):
    assert hasattr(streammachine, name), f"from streammachine import {name}"
    if not name.startswith("_"):
        assert name in streammachine.__all__


def test_app_constructor_and_methods():
    assert_leading(App, {"name": "streammachine.app", "to_scan": None, "max_processes": 5, "max_threads": 5})
    assert "dashboard_enabled" in parameters(App), "the reference's OHLC example passes dashboard_enabled=True"
    for method, args in {
        "send": ["topic", "record"],
        "send_batch": ["topic", "records"],
        "shutdown": [],
        "health_check": [],
        "start": [],
    }.items():
        assert list(parameters(getattr(App, method)))[: len(args)] == args, method
    for coroutine in ("send", "send_batch", "shutdown", "health_check"):
        assert inspect.iscoroutinefunction(getattr(App, coroutine)), coroutine
    assert isinstance(App.__dict__["storage"], property) and isinstance(App.__dict__["redis"], property)
    assert callable(App.on_startup) and callable(App.on_shutdown)


def test_agent_and_timer_decorators():
    assert_leading(App.agent, {"stream": REQUIRED, "group": None, "concurrency": 1, "processes": None})
    assert Settings.from_env({}).default_group == "eventengine", "group=None resolves to the reference's default"
    assert AppConfig().default_group == "eventengine"
    assert_leading(App.timer, {"t": REQUIRED})


def test_message_fields_and_properties():
    assert_leading(Message, {f: None for f in ("topic", "key", "sent", "received", "consumer_id", "data")})
    record = Message(topic="ticks", key="1-0", data=("1-0", {b"price": b"1.5"}), received=1.0)
    assert record.message == {"price": "1.5"}
    assert record.timer.startswith("ticks: task ") and record.timer.endswith(" ms")


def test_storage_methods():
    expected = {
        "write": ["key", "value"],
        "read": ["key", "default"],
        "delete": ["key"],
        "exists": ["key"],
        "keys": [],
        "clear": [],
    }
    for method, args in expected.items():
        assert list(parameters(getattr(Storage, method))) == args, method
        assert inspect.iscoroutinefunction(getattr(Storage, method)), method
    assert parameters(Storage.read)["default"] is None
    assert isinstance(inspect.getattr_static(Storage, "reset_instance"), classmethod)


def test_redis_connection():
    assert_leading(RedisConnection, {"host": None, "port": None, "db": None, "max_connections": None, "url": None})
    assert list(parameters(RedisConnection.pipeline_xadd))[:2] == ["topic", "records"]
    for method in ("consumer", "pipeline_xadd", "health_check", "close"):
        assert hasattr(RedisConnection, method), method
    assert hasattr(RedisConnection, "__aenter__") and hasattr(RedisConnection, "__aexit__")


def test_dataframe_utilities():
    columns = {"stream_name_column": "stream", "id_column": "id", "timestamp_column": "timestamp_ms"}
    assert_leading(streammachine.streams_to_dataframe, {"streams": REQUIRED, **columns, "include_sequence": False})
    assert_leading(streammachine.streams_to_dataframe_fast, {"streams": REQUIRED, **columns})
    assert_leading(
        streammachine.prune_old_dataframe_rows,
        {"df": REQUIRED, "cutoff_seconds": REQUIRED, "timestamp_column": "timestamp_ms", "current_time": None},
    )
    assert_leading(
        streammachine.TimeSeriesBuffer,
        {"max_age_seconds": REQUIRED, "timestamp_column": "timestamp_ms", "max_rows": None},
    )
    buffer = streammachine.TimeSeriesBuffer(max_age_seconds=60)
    assert len(buffer) == 0 and buffer.last_timestamp is None and buffer.get().empty
    for method in ("append", "get", "clear"):
        assert callable(getattr(buffer, method)), method


def test_ohlc_surface():
    agg = streammachine.create_ohlc_aggregator()
    assert tuple(agg.intervals) == (60000, 300000), "default intervals: 1min, 5min"
    for method in (
        "update_tick",
        "get_candles",
        "get_completed_candles",
        "flush_interval",
        "get_candles_as_dicts",
        "process_stream_batch",
        "clear",
    ):
        assert callable(getattr(agg, method)), method
    agg.update_tick(symbol=b"AAPL", price=150.25, volume=1000.0, timestamp_ms=1638360000000)
    (candle,) = agg.get_candles(b"AAPL", 60000)
    for prop in ("open", "high", "low", "close", "volume", "timestamp_ms", "candle_start_ms", "trade_count"):
        assert hasattr(candle, prop), prop
    assert agg.tick_count == 1
    assert streammachine.parse_stream_id_timestamp("1638360000000-0") == 1638360000000
    row = streammachine.format_candle_for_redis(candle, b"AAPL", 60000)
    assert row["symbol"] == "AAPL" and row["interval_ms"] == "60000" and row["open"] == "150.25"
    assert_leading(
        streammachine.FastOHLCConsumer,
        {
            "input_stream": REQUIRED,
            "output_stream_prefix": REQUIRED,
            "intervals": None,
            "group": "ohlc_workers",
            "price_field": "price",
            "volume_field": "volume",
        },
    )


def test_object_storage_methods():
    for method in ("store_with_pickle", "retrieve_with_pickle", "list_keys", "delete_keys"):
        assert inspect.iscoroutinefunction(getattr(streammachine.RedisObjectStorage, method)), method


def test_environment_variables_and_defaults():
    """The reference's variables, each read by Settings (the one reader); its defaults where it states one."""
    variables = {f.metadata.get("env"): f for f in Settings.__dataclass_fields__.values()}
    for name in (
        "REDIS_URL",
        "REDIS_HOST",
        "REDIS_PORT",
        "REDIS_DB",
        "REDIS_MAX_CONNECTIONS",
        "STREAMMACHINE_RECORDS",
        "STREAMMACHINE_COUNT",
        "STREAMMACHINE_DEFAULT_GROUP",
    ):
        assert name in variables, name
    defaults = Settings.from_env({})
    assert (defaults.max_connections, defaults.records, defaults.count, defaults.default_group) == (
        10,
        10000,
        10,
        "eventengine",
    )
    configured = Settings.from_env(
        {"REDIS_HOST": "cache", "REDIS_PORT": "6380", "REDIS_DB": "2", "STREAMMACHINE_COUNT": "50"}
    )
    assert (configured.redis_host, configured.redis_port, configured.redis_db, configured.count) == (
        "cache",
        6380,
        2,
        50,
    )


async def test_health_check_keys(app_factory):
    app = app_factory()
    health = await app.health_check()
    assert {"status", "redis", "active_tasks", "registered_agents", "registered_timers"} <= set(health)
    assert health["status"] in ("healthy", "degraded") and health["redis"] in ("connected", "disconnected")
