"""The one numeric argument check (_validate.py) and the constructors that use it."""

from __future__ import annotations

import math

import numpy as np
import pytest

from streammachine import App, ConsumerConfig, TimeSeriesBuffer
from streammachine._validate import check_non_negative, check_number, check_positive
from streammachine.config import ConfigError, TimerConfig
from streammachine.headless.run import RunOptions
from streammachine.redis.positions import trim
from streammachine.state.table import Table


def test_the_message_names_the_argument_the_value_and_what_was_expected():
    with pytest.raises(ValueError, match=r"^count=0: expected an int >= 1$"):
        check_positive("count", 0, integer=True)
    with pytest.raises(ValueError, match=r"^fps=61: expected a number > 0 and <= 60$"):
        check_positive("fps", 61, maximum=60)
    with pytest.raises(ValueError, match=r"^ttl='10': expected None or seconds > 0$"):
        check_positive("ttl", "10", optional=True, expected="seconds > 0")
    with pytest.raises(ValueError, match=r"^delay=-1: expected a number >= 0$"):
        check_non_negative("delay", -1)
    with pytest.raises(ConfigError, match=r"^x=1.5: expected an int >= 2$"):
        check_number("x", 1.5, integer=True, minimum=2, inclusive=True, error=ConfigError)
    with pytest.raises(ValueError, match=r"x='aaaa.*\.\.\.: expected"):
        check_positive("x", "a" * 200)


@pytest.mark.parametrize("bad", [True, False, "1", None, math.nan, math.inf, -math.inf, [1], 10**400 * -1])
def test_bools_text_and_non_finite_numbers_are_refused(bad):
    with pytest.raises(ValueError):
        check_positive("n", bad)


def test_numpy_numbers_pass_and_integers_come_back_as_int():
    assert (
        check_positive("n", np.int64(3), integer=True) == 3
        and type(check_positive("n", np.int64(3), integer=True)) is int
    )
    assert check_positive("n", np.float64(0.5)) == 0.5
    assert check_positive("n", 10**400, integer=True) == 10**400  # no float overflow on a big int
    assert check_positive("n", None, optional=True) is None


@pytest.mark.parametrize(
    "build, message",
    [
        # regressions: these were accepted (a bool is an int to Python), or failed later without naming the argument
        (lambda: App("v").agent("s", concurrency=True)(lambda m: None), "concurrency=True: expected an int >= 1"),
        (lambda: App("v").agent("s", processes=False)(lambda m: None), "processes=False: expected None or an int"),
        (lambda: RunOptions(target="app.py", workers=True), "workers=True: expected an integer >= 1"),
        (lambda: ConsumerConfig(retry_delay_ms=True), "ConsumerConfig.retry_delay_ms=True: expected milliseconds"),
        (lambda: TimerConfig(interval=math.inf), "timer interval=inf: expected seconds > 0"),
        (lambda: Table("t", ttl=math.nan), "table 't': ttl=nan: expected None or seconds > 0"),  # was accepted
        # the texts users already saw
        (lambda: ConsumerConfig(count=0), "ConsumerConfig.count=0: expected a positive integer"),
        (lambda: TimeSeriesBuffer(max_age_seconds=math.inf), "max_age_seconds=inf: expected a finite number"),
        (lambda: TimeSeriesBuffer(1, max_rows=0), "max_rows=0: expected None or an int >= 1"),
    ],
)
def test_constructors_refuse_bad_numbers_naming_them(build, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        build()


async def test_trim_refuses_a_non_finite_age_naming_it():
    """Regression: max_age=nan passed the hand-written check and failed later in int() without naming anything."""
    with pytest.raises(ValueError, match=r"^trim 's': max_age=nan: expected seconds >= 0$"):
        await trim(None, "s", max_age=math.nan)
