"""Settings from the environment: defaults, parsing, clear errors."""

import pytest

from streammachine import App, ConsumerConfig
from streammachine.config import ConfigError, Settings
from streammachine.redis.connection import explicit_url


def test_reference_defaults():
    s = Settings.from_env({})
    assert (s.max_connections, s.records, s.count, s.default_group) == (10, 10000, 10, "eventengine")
    assert s.redis_url is None and not s.redis_configured and s.embedded


def test_reference_variables_are_read():
    s = Settings.from_env(
        {
            "REDIS_URL": "redis://h:1/2",
            "REDIS_MAX_CONNECTIONS": "3",
            "STREAMMACHINE_RECORDS": "5",
            "STREAMMACHINE_COUNT": "7",
            "STREAMMACHINE_DEFAULT_GROUP": "grp",
        }
    )
    assert (s.redis_url, s.max_connections, s.records, s.count, s.default_group) == ("redis://h:1/2", 3, 5, 7, "grp")


@pytest.mark.parametrize(
    "name,value",
    [
        ("REDIS_PORT", "abc"),
        ("REDIS_DB", "-1"),
        ("STREAMMACHINE_COUNT", "0"),
        ("STREAMMACHINE_EMBEDDED", "maybe"),
        ("STREAMMACHINE_STORAGE", "disk"),
    ],
)
def test_bad_values_name_the_variable(name, value):
    with pytest.raises(ConfigError, match=f"{name}='{value}': expected"):
        Settings.from_env({name: value})


def test_url_resolution_order():
    s = Settings.from_env({"REDIS_URL": "redis://env:1/0", "REDIS_HOST": "ignored"})
    assert explicit_url(s, url="redis://arg:2/0") == "redis://arg:2/0"
    assert explicit_url(s) == "redis://env:1/0"
    s = Settings.from_env({"REDIS_HOST": "h", "REDIS_PORT": "7000", "REDIS_DB": "3"})
    assert explicit_url(s) == "redis://h:7000/3"
    assert explicit_url(Settings.from_env({})) is None


def test_env_feeds_app_and_agent_defaults():
    s = Settings.from_env({"STREAMMACHINE_COUNT": "42", "STREAMMACHINE_DEFAULT_GROUP": "g1"})
    app = App("cfg", settings=s)

    @app.agent("s")
    async def handle(record):
        pass

    spec = app.agents[next(iter(app.agents))]
    assert spec.group == "g1" and spec.config.count == 42


def test_consumer_config_validation():
    with pytest.raises(ConfigError, match="on_error='explode'"):
        ConsumerConfig(on_error="explode")
    with pytest.raises(ConfigError, match="count=0"):
        ConsumerConfig(count=0)
    assert ConsumerConfig().dead_letter_for("ticks") == "ticks:dead"


def test_pure_python_set_after_import_counts(monkeypatch):
    """Regression: the OHLC core was chosen once at import, so STREAMMACHINE_PURE_PYTHON set later was ignored."""
    import streammachine.ohlc as ohlc
    from streammachine.ohlc import FastOHLCConsumer, PythonFastOHLC, create_ohlc_aggregator

    monkeypatch.setenv("STREAMMACHINE_PURE_PYTHON", "1")
    assert type(create_ohlc_aggregator()) is PythonFastOHLC
    assert ohlc.FastOHLC is PythonFastOHLC and ohlc._HAS_FAST_OHLC_CYTHON is False
    assert type(FastOHLCConsumer("ticks", "candles").aggregator) is PythonFastOHLC
    monkeypatch.setenv("STREAMMACHINE_PURE_PYTHON", "0")
    assert type(create_ohlc_aggregator()) is (ohlc.CythonFastOHLC or PythonFastOHLC)
    monkeypatch.setenv("STREAMMACHINE_PURE_PYTHON", "perhaps")
    with pytest.raises(ConfigError, match="STREAMMACHINE_PURE_PYTHON='perhaps': expected 0 or 1"):
        create_ohlc_aggregator()


def test_defaults_are_written_once():
    """ConsumerConfig and AppConfig take their defaults from Settings; the README table states the same ones."""
    import re
    from pathlib import Path

    from streammachine.config import AppConfig

    settings = Settings.from_env({})
    consumer = ConsumerConfig()
    for name in ("count", "block_ms", "max_deliveries", "retry_delay_ms", "claim_idle_ms"):
        assert getattr(consumer, name) == getattr(settings, name), name
    assert (AppConfig().grace_seconds, AppConfig().default_group) == (settings.grace_seconds, settings.default_group)

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    section = readme.split("## Configuration", 1)[1].split("| Variable |", 1)[1].split("\n\n", 1)[0]
    documented = {}
    for row in re.findall(r"^\| (.+?) \| (.+?) \|", section, flags=re.M):
        names, default = row
        for name in re.findall(r"`([A-Z_]+)`", names):
            documented[name] = default.strip("`")
    variables = Settings.variables()
    assert set(documented) == set(variables), "the README's table lists every variable and only those"
    shown = {bool: lambda v: str(int(v)), float: lambda v: f"{v:g}"}
    for name, (_, default) in variables.items():
        if isinstance(default, (bool, int, float, str)):
            assert documented[name] == shown.get(type(default), str)(default), name


def test_settings_in_force_and_for_child_processes(monkeypatch):
    monkeypatch.setenv("REDIS_URL", "redis://from-env:1/0")
    override = Settings.from_env({"REDIS_URL": "redis://override:2/0"})
    assert Settings.current().redis_url == "redis://from-env:1/0"
    with override.use():
        assert Settings.current() is override
        assert App("in-force").settings is override  # an App a target creates takes the settings in force
    assert Settings.current().redis_url == "redis://from-env:1/0"
    env = override.child_environment(consumer_name="box-w1")
    assert env["REDIS_URL"] == "redis://override:2/0" and env["STREAMMACHINE_CONSUMER_NAME"] == "box-w1"
    assert Settings.read("redis_url") == "redis://from-env:1/0"
    with pytest.raises(AttributeError, match="no field 'nope'"):
        Settings.read("nope")
