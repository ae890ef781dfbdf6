"""Configuration: the one place that reads the environment.

``Settings.from_env()`` turns environment variables into typed values (with a
clear error naming the variable when one does not parse). ``AppConfig``,
``ConsumerConfig`` and ``TimerConfig`` are the per-app, per-agent and
per-timer knobs; their defaults come from ``Settings``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Mapping, Optional, Tuple
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


def _parse(env: Mapping[str, str], name: str, default: Any, convert: Callable[[str], Any], expected: str) -> Any:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return convert(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"{name}={raw!r}: expected {expected}") from None


def _positive_int(raw: str) -> int:
    return check_positive("value", int(raw), integer=True)  # _parse words the error for the variable


def _positive_float(raw: str) -> float:
    value = float(raw)
    if not value > 0:
        raise ValueError(raw)
    return value


def _non_negative_int(raw: str) -> int:
    return check_non_negative("value", int(raw), integer=True)


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


def _default_home(env: Mapping[str, str]) -> Path:
    base = env.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "streammachine"


@dataclass(frozen=True)
class Settings:
    """Everything StreamMachine takes from the environment, parsed once."""

    redis_url: Optional[str] = None
    redis_host: Optional[str] = None
    redis_port: Optional[int] = None
    redis_db: Optional[int] = None
    redis_cluster: bool = False
    max_connections: int = 10
    records: int = 10000
    count: int = 10
    default_group: str = "eventengine"
    block_ms: int = 1000
    max_deliveries: int = 5
    claim_idle_ms: int = 30000
    retry_delay_ms: int = 500
    stream_maxlen: Optional[int] = None
    stream_max_age: Optional[float] = None
    grace_seconds: float = 10.0
    embedded: bool = True
    home: Path = field(default_factory=lambda: _default_home(os.environ))
    consumer_name: Optional[str] = None
    secret_key: Optional[bytes] = None
    storage_backend: str = "manager"
    mcp_read_only: bool = False
    log_level: str = "INFO"
    gc_freeze: bool = True
    pure_python: bool = False

    @classmethod
    def from_env(cls, environ: Optional[Mapping[str, str]] = None) -> Settings:
        env = os.environ if environ is None else environ
        redis_url = env.get("REDIS_URL") or None
        if redis_url is not None:
            check_redis_url(redis_url, "REDIS_URL")
        secret = env.get("STREAMMACHINE_SECRET_KEY")
        if secret and len(secret) < MIN_SECRET_KEY_LENGTH:
            _warn_once(
                "secret_key",
                "STREAMMACHINE_SECRET_KEY is %d characters: the key that signs stored objects (unpickling runs "
                "code) should be at least %d random characters, e.g. python -c 'import secrets; "
                "print(secrets.token_hex(32))'",
                len(secret),
                MIN_SECRET_KEY_LENGTH,
            )
        return cls(
            redis_url=redis_url,
            redis_host=env.get("REDIS_HOST") or None,
            redis_port=_parse(env, "REDIS_PORT", None, _positive_int, "a port number"),
            redis_db=_parse(env, "REDIS_DB", None, _non_negative_int, "a database number >= 0"),
            redis_cluster=_parse(env, "STREAMMACHINE_CLUSTER", False, _bool, "0 or 1"),
            max_connections=_parse(env, "REDIS_MAX_CONNECTIONS", 10, _positive_int, "a positive integer"),
            records=_parse(env, "STREAMMACHINE_RECORDS", 10000, _positive_int, "a positive integer"),
            count=_parse(env, "STREAMMACHINE_COUNT", 10, _positive_int, "a positive integer"),
            default_group=env.get("STREAMMACHINE_DEFAULT_GROUP") or "eventengine",
            block_ms=_parse(env, "STREAMMACHINE_BLOCK_MS", 1000, _positive_int, "milliseconds > 0"),
            max_deliveries=_parse(env, "STREAMMACHINE_MAX_DELIVERIES", 5, _positive_int, "a positive integer"),
            claim_idle_ms=_parse(env, "STREAMMACHINE_CLAIM_IDLE_MS", 30000, _positive_int, "milliseconds > 0"),
            retry_delay_ms=_parse(env, "STREAMMACHINE_RETRY_DELAY_MS", 500, _non_negative_int, "milliseconds >= 0"),
            stream_maxlen=_parse(env, "STREAMMACHINE_STREAM_MAXLEN", None, _positive_int, "a positive integer"),
            stream_max_age=_parse(env, "STREAMMACHINE_STREAM_MAX_AGE", None, _positive_float, "seconds > 0"),
            grace_seconds=_parse(env, "STREAMMACHINE_GRACE_SECONDS", 10.0, float, "seconds"),
            embedded=_parse(env, "STREAMMACHINE_EMBEDDED", True, _bool, "0 or 1"),
            home=Path(env["STREAMMACHINE_HOME"]) if env.get("STREAMMACHINE_HOME") else _default_home(env),
            consumer_name=env.get("STREAMMACHINE_CONSUMER_NAME") or None,
            secret_key=secret.encode() if secret else None,
            storage_backend=_parse(
                env, "STREAMMACHINE_STORAGE", "manager", _choice("manager", "redis"), "'manager' or 'redis'"
            ),
            mcp_read_only=_parse(env, "STREAMMACHINE_MCP_READ_ONLY", False, _bool, "0 or 1"),
            log_level=(env.get("STREAMMACHINE_LOG_LEVEL") or "INFO").upper(),
            gc_freeze=_parse(env, "STREAMMACHINE_GC_FREEZE", True, _bool, "0 or 1"),
            pure_python=_parse(env, "STREAMMACHINE_PURE_PYTHON", False, _bool, "0 or 1"),
        )

    def __repr__(self) -> str:  # credentials never in logs or tracebacks: URL password redacted, key hidden
        from streammachine._redact import redact_url

        shown = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        if self.redis_url:
            shown["redis_url"] = redact_url(self.redis_url)
        if self.secret_key:
            shown["secret_key"] = "***"
        return "Settings(" + ", ".join(f"{k}={v!r}" for k, v in shown.items()) + ")"

    @property
    def redis_configured(self) -> bool:
        """True when the user named a server: then no embedded fallback happens."""
        return any(v is not None for v in (self.redis_url, self.redis_host, self.redis_port, self.redis_db))


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

    count: int = 10
    block_ms: int = 1000
    start_id: str = "$"
    max_deliveries: int = 5
    on_error: ErrorPolicy = "retry"
    retry_delay_ms: int = 500
    claim_idle_ms: int = 30000
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
    stream_maxlen: Optional[int] = None
    stream_max_age: Optional[float] = None  # seconds: sends trim older entries (XADD MINID ~)
    grace_seconds: float = 10.0
    consumer: ConsumerConfig = field(default_factory=ConsumerConfig)
    default_group: str = "eventengine"

    def __post_init__(self) -> None:
        if self.stream_maxlen is not None and self.stream_max_age is not None:
            raise ConfigError(
                f"stream_maxlen={self.stream_maxlen!r} and stream_max_age={self.stream_max_age!r}: "
                "XADD trims by one rule, choose one"
            )
        age = self.stream_max_age
        if age is not None and (isinstance(age, bool) or not isinstance(age, (int, float)) or not age > 0):
            raise ConfigError(f"stream_max_age={age!r}: expected seconds > 0")

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
