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
