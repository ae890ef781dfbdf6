"""Configuration: the one place that reads the environment.

``Settings.from_env()`` turns environment variables into typed values (with a
clear error naming the variable when one does not parse); each variable and
its default is declared once, on its ``Settings`` field. ``AppConfig``,
``ConsumerConfig`` and ``TimerConfig`` are the per-app, per-agent and
per-timer knobs; their defaults are the ``Settings`` ones.

Settings are passed down (``App(settings=...)``, ``RedisConnection(settings=
...)``); code that runs someone else's target (``streammachine run``) puts its
own in force with ``settings.use()``, and ``Settings.current()`` returns them.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import random
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, Literal, Mapping, Optional, Tuple
from urllib.parse import unquote, urlsplit

from streammachine._validate import check_non_negative, check_positive

ErrorPolicy = Literal["retry", "dead_letter", "skip"]


log = logging.getLogger("streammachine.config")

# An HMAC key guessed or brute-forced means forged pickles, and unpickling runs code: below this, say so.
MIN_SECRET_KEY_LENGTH = 32
_warned: set = set()


def _warn_once(topic: str, message: str, *args: Any) -> None:
    if topic not in _warned:
        _warned.add(topic)
        log.warning(message, *args)


class ConfigError(ValueError):
    """An environment variable or option has a value StreamMachine cannot use."""


class BadRedisURL(ConfigError):
    """A Redis URL that does not parse; the message shows it with its password hidden."""


REDIS_SCHEMES = ("redis", "rediss", "unix", "redis+cluster", "rediss+cluster")


def check_redis_url(url: str, source: str = "") -> str:
    """``url`` if it parses as a Redis URL, else BadRedisURL naming ``source`` (e.g. REDIS_URL) and the URL, redacted.

    The same rules as redis-py's parser, plus one it lets pass silently: a
    database path that is not a number (redis-py would connect to db 0).
    """
    from streammachine._redact import redact_url, scrub

    problem = None
    try:
        parts = urlsplit(url)
        if parts.scheme not in REDIS_SCHEMES:
            problem = "expected a redis://, rediss://, unix://, redis+cluster:// or rediss+cluster:// URL"
        elif parts.scheme != "unix":
            parts.port  # noqa: B018  (raises ValueError for a port that is no number in 0-65535)
            database = unquote(parts.path).strip("/")
            if database and not database.isdigit():
                problem = f"database {database!r} (the path after the host): expected a number >= 0"
    except (ValueError, TypeError) as exc:
        problem = str(exc)
    if problem is not None:
        where = f"{source}: " if source else ""
        raise BadRedisURL(f"{where}bad Redis URL {redact_url(str(url))}: {scrub(problem, [str(url)])}")
    return url


def _positive_int(raw: str) -> int:
    return check_positive("value", int(raw), integer=True)  # _parse words the error for the variable


def _positive_float(raw: str) -> float:
    value = float(raw)
    if not value > 0:
        raise ValueError(raw)
    return value


def _non_negative_int(raw: str) -> int:
    return check_non_negative("value", int(raw), integer=True)


def _at_least(low: int) -> Callable[[str], int]:
    def convert(raw: str) -> int:
        value = int(raw)
        if value < low:
            raise ValueError(raw)
        return value

    return convert


def _port(raw: str) -> int:
    value = int(raw)
    if not 0 <= value <= 65535:
        raise ValueError(raw)
    return value


def _bool(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(raw)


def _choice(*options: str) -> Callable[[str], str]:
    def convert(raw: str) -> str:
        if raw not in options:
            raise ValueError(raw)
        return raw

    return convert


def _names(raw: str) -> tuple:
    """A comma-separated list (hosts, origins), blanks dropped."""
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def _key_prefix(raw: str) -> str:
    """A key prefix that confines a namespace: non-empty and free of glob characters."""
    if any(c in raw for c in "*?[]\\") or not raw.strip():
        raise ValueError(raw)
    return raw


def _default_home(env: Mapping[str, str]) -> Path:
    base = env.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "streammachine"


def _text(raw: str) -> str:
    return raw


def _upper(raw: str) -> str:
    return raw.strip().upper()


def _non_negative_float(raw: str) -> float:
    value = float(raw)
    if not value >= 0:  # also refuses nan
        raise ValueError(raw)
    return value


def _variable(name: str, convert: Callable[[str], Any] = _text, expected: str = "", default: Any = None) -> Any:
    """A setting read from the environment variable ``name``: its default is written here, once."""
    return field(default=default, metadata={"env": name, "convert": convert, "expected": expected})


_current: ContextVar[Optional[Settings]] = ContextVar("streammachine_settings", default=None)


@dataclass(frozen=True)
class Settings:
    """Everything StreamMachine takes from the environment, parsed once; each default is written here only."""

    redis_url: Optional[str] = _variable("REDIS_URL", lambda raw: check_redis_url(raw, "REDIS_URL"), "a Redis URL")
    redis_host: Optional[str] = _variable("REDIS_HOST")
    redis_port: Optional[int] = _variable("REDIS_PORT", _positive_int, "a port number")
    redis_db: Optional[int] = _variable("REDIS_DB", _non_negative_int, "a database number >= 0")
    redis_cluster: bool = _variable("STREAMMACHINE_CLUSTER", _bool, "0 or 1", False)
    max_connections: int = _variable("REDIS_MAX_CONNECTIONS", _positive_int, "a positive integer", 10)
    records: int = _variable("STREAMMACHINE_RECORDS", _positive_int, "a positive integer", 10000)
    count: int = _variable("STREAMMACHINE_COUNT", _positive_int, "a positive integer", 10)
    default_group: str = _variable("STREAMMACHINE_DEFAULT_GROUP", _text, "", "eventengine")
    block_ms: int = _variable("STREAMMACHINE_BLOCK_MS", _positive_int, "milliseconds > 0", 1000)
    max_deliveries: int = _variable("STREAMMACHINE_MAX_DELIVERIES", _positive_int, "a positive integer", 5)
    claim_idle_ms: int = _variable("STREAMMACHINE_CLAIM_IDLE_MS", _positive_int, "milliseconds > 0", 30000)
    retry_delay_ms: int = _variable("STREAMMACHINE_RETRY_DELAY_MS", _non_negative_int, "milliseconds >= 0", 500)
    stream_maxlen: Optional[int] = _variable("STREAMMACHINE_STREAM_MAXLEN", _positive_int, "a positive integer")
    stream_max_age: Optional[float] = _variable("STREAMMACHINE_STREAM_MAX_AGE", _positive_float, "seconds > 0")
    grace_seconds: float = _variable("STREAMMACHINE_GRACE_SECONDS", _non_negative_float, "seconds >= 0", 10.0)
    embedded: bool = _variable("STREAMMACHINE_EMBEDDED", _bool, "0 or 1", True)
    home: Path = field(
        default_factory=lambda: _default_home(os.environ),
        metadata={"env": "STREAMMACHINE_HOME", "convert": Path, "expected": "a directory", "default": _default_home},
    )
    consumer_name: Optional[str] = _variable("STREAMMACHINE_CONSUMER_NAME")
    secret_key: Optional[bytes] = _variable("STREAMMACHINE_SECRET_KEY", str.encode, "text")
    storage_manager: Optional[str] = _variable("STREAMMACHINE_STORAGE_MANAGER")  # set by a supervisor: secret
    storage_backend: str = _variable(
        "STREAMMACHINE_STORAGE", _choice("manager", "redis"), "'manager' or 'redis'", "manager"
    )
    mcp_read_only: bool = _variable("STREAMMACHINE_MCP_READ_ONLY", _bool, "0 or 1", False)
    mcp_object_prefix: str = _variable(
        "STREAMMACHINE_MCP_OBJECT_PREFIX", _key_prefix, "a non-empty key prefix without * ? [ ] \\", "obj:"
    )
    mcp_max_result_bytes: int = _variable(
        "STREAMMACHINE_MCP_MAX_RESULT_BYTES", _at_least(4096), "bytes >= 4096", 512 * 1024
    )
    mcp_max_request_bytes: int = _variable(
        "STREAMMACHINE_MCP_MAX_REQUEST_BYTES", _at_least(4096), "bytes >= 4096", 4 * 1024 * 1024
    )
    mcp_allowed_hosts: tuple = _variable("STREAMMACHINE_MCP_ALLOWED_HOSTS", _names, "host[:port],...", ())
    mcp_allowed_origins: tuple = _variable("STREAMMACHINE_MCP_ALLOWED_ORIGINS", _names, "scheme://host[:port],...", ())
    mcp_token: Optional[str] = _variable("STREAMMACHINE_MCP_TOKEN")
    heartbeat_seconds: float = _variable(
        "STREAMMACHINE_HEARTBEAT_SECONDS", _non_negative_float, "seconds >= 0 (0: no instance registry)", 2.0
    )
    instance_ttl: float = _variable("STREAMMACHINE_INSTANCE_TTL", _positive_float, "seconds > 0", 10.0)
    dashboard_port: int = _variable("STREAMMACHINE_DASHBOARD_PORT", _port, "a TCP port number 0-65535", 8000)
    dashboard_host: str = _variable("STREAMMACHINE_DASHBOARD_HOST", _text, "", "127.0.0.1")
    dashboard_token: Optional[str] = _variable("STREAMMACHINE_DASHBOARD_TOKEN")
    dashboard_lock_ttl: float = _variable("STREAMMACHINE_DASHBOARD_LOCK_TTL", _positive_float, "seconds > 0", 10.0)
    log_level: str = _variable("STREAMMACHINE_LOG_LEVEL", _upper, "a log level", "INFO")
    # a failing handler on a fast stream: one log line per agent per interval, with a count (0: every failure)
    failure_log_interval: float = _variable(
        "STREAMMACHINE_FAILURE_LOG_INTERVAL", _non_negative_float, "seconds >= 0", 5.0
    )
    gc_freeze: bool = _variable("STREAMMACHINE_GC_FREEZE", _bool, "0 or 1", True)
    pure_python: bool = _variable("STREAMMACHINE_PURE_PYTHON", _bool, "0 or 1", False)

    @classmethod
    def from_env(cls, environ: Optional[Mapping[str, str]] = None) -> Settings:
        env = os.environ if environ is None else environ
        settings = cls(**{f.name: _read(f, env) for f in dataclasses.fields(cls)})
        if settings.secret_key and len(settings.secret_key) < MIN_SECRET_KEY_LENGTH:
            _warn_once(
                "secret_key",
                "STREAMMACHINE_SECRET_KEY is %d characters: the key that signs stored objects (unpickling runs "
                "code) should be at least %d random characters, e.g. python -c 'import secrets; "
                "print(secrets.token_hex(32))'",
                len(settings.secret_key),
                MIN_SECRET_KEY_LENGTH,
            )
        return settings

    @classmethod
    def read(cls, name: str, environ: Optional[Mapping[str, str]] = None) -> Any:
        """One setting from the environment now (``Settings.read("pure_python")``), others left unparsed."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        if name not in fields:
            raise AttributeError(f"Settings has no field {name!r}; expected one of {sorted(fields)}")
        return _read(fields[name], os.environ if environ is None else environ)

    @classmethod
    def variables(cls) -> Dict[str, Tuple[str, Any]]:
        """Environment variable -> (field name, default), for documentation and its test."""
        out = {}
        for f in dataclasses.fields(cls):
            default = f.default if f.default is not dataclasses.MISSING else f.metadata.get("default")
            out[f.metadata["env"]] = (f.name, default)
        return out

    @classmethod
    def current(cls) -> Settings:
        """The settings in force: those put in place with ``use()`` (``streammachine run --redis-url``), else the
        environment's. ``App()`` and ``RedisConnection()`` start from these when given no ``settings``."""
        return _current.get() or cls.from_env()

    @contextmanager
    def use(self) -> Iterator[Settings]:
        """Make these the ``current()`` settings for the code run inside (and the tasks it starts)."""
        token = _current.set(self)
        try:
            yield self
        finally:
            _current.reset(token)

    def child_environment(
        self, *, consumer_name: Optional[str] = None, storage_manager: Optional[str] = None
    ) -> Dict[str, str]:
        """The environment of a worker process: this one's, with the Redis URL in force (a ``--redis-url``
        included) and, when given, its own consumer name and the storage Manager to share (a secret: the
        environment, unlike argv, is private to the user)."""
        env = dict(os.environ)
        if self.redis_url:
            env["REDIS_URL"] = self.redis_url
        if consumer_name:
            env["STREAMMACHINE_CONSUMER_NAME"] = consumer_name
        if storage_manager:
            env["STREAMMACHINE_STORAGE_MANAGER"] = storage_manager
        return env

    def __repr__(self) -> str:  # credentials never in logs or tracebacks: URL password redacted, key hidden
        from streammachine._redact import redact_url

        shown = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        if self.redis_url:
            shown["redis_url"] = redact_url(self.redis_url)
        if self.secret_key:
            shown["secret_key"] = "***"
        if self.storage_manager:
            shown["storage_manager"] = "***"
        if self.mcp_token:
            shown["mcp_token"] = "***"
        if self.dashboard_token:
            shown["dashboard_token"] = "***"
        return "Settings(" + ", ".join(f"{k}={v!r}" for k, v in shown.items()) + ")"

    @property
    def redis_configured(self) -> bool:
        """True when the user named a server: then no embedded fallback happens."""
        return any(v is not None for v in (self.redis_url, self.redis_host, self.redis_port, self.redis_db))


def _read(f: dataclasses.Field, env: Mapping[str, str]) -> Any:
    """Field ``f`` from ``env``: unset or empty means its default; a value that does not parse is a ConfigError."""
    meta = f.metadata
    raw = env.get(meta["env"])
    if raw is None or raw == "":
        return f.default if f.default is not dataclasses.MISSING else meta["default"](env)
    try:
        return meta["convert"](raw)
    except ConfigError:  # a converter's own message (a bad Redis URL, its password hidden)
        raise
    except (TypeError, ValueError):
        raise ConfigError(f"{meta['env']}={raw!r}: expected {meta['expected']}") from None


@dataclass(frozen=True)
class ConsumerConfig:
    """How one agent reads, acknowledges, retries and dead-letters.

    ``on_error``: ``"retry"`` leaves a failed entry pending and retries it
    until ``max_deliveries``, then dead-letters it; ``"dead_letter"`` sends
    it to the dead-letter stream at the first failure; ``"skip"`` logs and
    acknowledges it (the only policy that drops data, on request).

    Retries wait ``retry_delay_ms`` x ``retry_backoff`` ** (delivery - 1),
    at most ``retry_max_delay_ms``, with jitter (half fixed, half random), so
    a downstream outage does not burn through ``max_deliveries`` in a few
    seconds. ``retry_on``: only these exception types are retried, others are
    dead-lettered at once (default: every ``Exception``); ``dead_letter_on``:
    these are dead-lettered at once whatever ``retry_on`` says.
    """

    count: int = Settings.count
    block_ms: int = Settings.block_ms
    start_id: str = "$"
    max_deliveries: int = Settings.max_deliveries
    on_error: ErrorPolicy = "retry"
    retry_delay_ms: int = Settings.retry_delay_ms
    claim_idle_ms: int = Settings.claim_idle_ms
    dead_letter_stream: str = "{stream}:dead"
    retry_backoff: float = 2.0
    retry_max_delay_ms: Optional[int] = None  # None: 30 s, or retry_delay_ms when that is longer
    retry_on: Tuple[type, ...] = (Exception,)
    dead_letter_on: Tuple[type, ...] = ()

    def __post_init__(self) -> None:
        for name in ("count", "block_ms", "max_deliveries", "claim_idle_ms"):
            check_positive(
                f"ConsumerConfig.{name}",
                getattr(self, name),
                integer=True,
                expected="a positive integer",
                error=ConfigError,
            )
        if self.on_error not in ("retry", "dead_letter", "skip"):
            raise ConfigError(f"ConsumerConfig.on_error={self.on_error!r}: expected 'retry', 'dead_letter' or 'skip'")
        check_non_negative(
            "ConsumerConfig.retry_delay_ms",
            self.retry_delay_ms,
            integer=True,
            expected="milliseconds >= 0",
            error=ConfigError,
        )
        if (
            isinstance(self.retry_backoff, bool)
            or not isinstance(self.retry_backoff, (int, float))
            or not (self.retry_backoff >= 1)
        ):
            raise ConfigError(f"ConsumerConfig.retry_backoff={self.retry_backoff!r}: expected a factor >= 1")
        if self.retry_max_delay_ms is not None and (
            not isinstance(self.retry_max_delay_ms, int) or self.retry_max_delay_ms < self.retry_delay_ms
        ):
            raise ConfigError(
                f"ConsumerConfig.retry_max_delay_ms={self.retry_max_delay_ms!r}: expected milliseconds >= "
                f"retry_delay_ms ({self.retry_delay_ms})"
            )
        for name in ("retry_on", "dead_letter_on"):
            value = getattr(self, name)
            if isinstance(value, type):
                object.__setattr__(self, name, (value,))
            elif not (
                isinstance(value, tuple) and all(isinstance(v, type) and issubclass(v, BaseException) for v in value)
            ):
                raise ConfigError(f"ConsumerConfig.{name}={value!r}: expected an exception class or a tuple of them")

    def retry_delay(self, delivered: int) -> float:
        """Seconds before the retry of an entry that failed on its ``delivered``-th delivery (with jitter)."""
        cap = max(30000, self.retry_delay_ms) if self.retry_max_delay_ms is None else self.retry_max_delay_ms
        delay = min(self.retry_delay_ms * self.retry_backoff ** max(delivered - 1, 0), cap)
        return (delay / 2 + random.uniform(0, delay / 2)) / 1000.0

    def retries(self, exc: BaseException) -> bool:
        """Whether a failure with ``exc`` is retried (rather than dead-lettered at once)."""
        return isinstance(exc, self.retry_on) and not isinstance(exc, self.dead_letter_on)

    @classmethod
    def from_settings(cls, settings: Settings) -> ConsumerConfig:
        return cls(
            count=settings.count,
            block_ms=settings.block_ms,
            max_deliveries=settings.max_deliveries,
            retry_delay_ms=settings.retry_delay_ms,
            claim_idle_ms=settings.claim_idle_ms,
        )

    def replace(self, **changes: Any) -> ConsumerConfig:
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ConfigError(
                f"unknown consumer option(s) {sorted(unknown)}; expected some of {[f.name for f in dataclasses.fields(self)]}"
            )
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def dead_letter_for(self, stream: str) -> str:
        return self.dead_letter_stream.format(stream=stream)


@dataclass(frozen=True)
class TimerConfig:
    """A periodic task: runs every ``interval`` seconds at a fixed rate."""

    interval: float
    name: Optional[str] = None
    run_immediately: bool = False

    def __post_init__(self) -> None:
        check_positive("timer interval", self.interval, expected="seconds > 0", error=ConfigError)


@dataclass(frozen=True)
class AppConfig:
    """The App's settings; ``App(...)`` keyword arguments override these."""

    name: str = "streammachine"
    max_processes: int = 5
    max_threads: int = 5
    stream_maxlen: Optional[int] = Settings.stream_maxlen
    stream_max_age: Optional[float] = Settings.stream_max_age  # seconds: sends trim older entries (XADD MINID ~)
    grace_seconds: float = Settings.grace_seconds
    consumer: ConsumerConfig = field(default_factory=ConsumerConfig)
    default_group: str = Settings.default_group

    def __post_init__(self) -> None:
        if self.stream_maxlen is not None and self.stream_max_age is not None:
            raise ConfigError(
                f"stream_maxlen={self.stream_maxlen!r} and stream_max_age={self.stream_max_age!r}: "
                "XADD trims by one rule, choose one"
            )
        if self.stream_max_age is not None:
            check_positive("stream_max_age", self.stream_max_age, expected="seconds > 0", error=ConfigError)

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> AppConfig:
        maxlen, max_age = settings.stream_maxlen, settings.stream_max_age
        if overrides.get("stream_maxlen") is not None or overrides.get("stream_max_age") is not None:
            maxlen = max_age = None  # a trim rule given as an argument replaces the environment's
        base = cls(
            stream_maxlen=maxlen,
            stream_max_age=max_age,
            grace_seconds=settings.grace_seconds,
            consumer=ConsumerConfig.from_settings(settings),
            default_group=settings.default_group,
        )
        return dataclasses.replace(base, **{k: v for k, v in overrides.items() if v is not None})
