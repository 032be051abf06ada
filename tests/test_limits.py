"""The adaptive rate controller on an injected clock: no test here sleeps."""

from __future__ import annotations

import pytest

from batchgen.limits import AdaptiveRate, RateLimits, _bucket, _set_rate


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def feed(rate: AdaptiveRate, clock: Clock, per_minute: float, seconds: float) -> None:
    """The server accepts ``per_minute`` requests per minute for ``seconds``."""
    step = 60 / per_minute
    end = clock.now + seconds
    while clock.now < end:
        rate.accepted()
        clock.now += step


def test_a_429_while_saturating_settles_just_under_what_the_server_accepted() -> None:
    clock = Clock()
    rate = AdaptiveRate(2400, clock)  # configured twice too high
    feed(rate, clock, 1200, 60)  # the server took 1,200 in the last minute
    assert rate.rejected(delay=30)
    assert rate.rate == pytest.approx(1200 * 0.97, rel=0.01)


def test_a_burst_of_429s_steps_down_once() -> None:
    clock = Clock()
    rate = AdaptiveRate(1000, clock)
    feed(rate, clock, 1000, 60)
    assert rate.rejected(delay=5)
    first = rate.rate
    clock.now += 1
    assert not rate.rejected(delay=5)  # the same burst
    assert rate.rate == first


def test_without_a_saturated_window_the_rate_is_cut_by_a_factor() -> None:
    clock = Clock()
    rate = AdaptiveRate(1000, clock)
    feed(rate, clock, 100, 60)  # little traffic: someone else shares the quota
    rate.rejected(delay=1)
    assert rate.rate == pytest.approx(700)


def test_the_rate_climbs_back_one_percent_of_the_configured_rate_a_minute() -> None:
    clock = Clock()
    rate = AdaptiveRate(1000, clock)
    feed(rate, clock, 800, 60)
    rate.rejected(delay=2)
    low = rate.rate
    assert low == pytest.approx(776, abs=2)
    clock.now += 2  # the pause
    feed(rate, clock, low, 300)  # five quiet minutes
    assert rate.rate == pytest.approx(low + 5 * 10, abs=2)
    feed(rate, clock, rate.rate, 3600)
    assert rate.rate == 1000  # never above the configured rate


def test_the_rate_has_a_floor() -> None:
    clock = Clock()
    rate = AdaptiveRate(1000, clock)
    for _ in range(30):
        clock.now += 120
        rate.rejected(delay=1)
    assert rate.rate == pytest.approx(20)


async def test_token_estimates_learn_from_real_counts() -> None:
    limits = RateLimits(6000, tokens_per_minute=10**6, clock=Clock())
    assert limits.estimate(100) == 100
    for _ in range(50):
        await limits.settle(estimated=100, charged=limits.estimate(100), actual=150)
    assert limits.estimate(100) == pytest.approx(150, abs=2)


async def test_a_token_429_steps_down_the_token_rate_only() -> None:
    clock = Clock()
    limits = RateLimits(6000, tokens_per_minute=100_000, clock=clock)
    limits.rejected(2.0, "GenerateContentInputTokensPerModelPerMinute-FreeTier")
    assert limits.tokens is not None and limits.tokens.rate < 100_000
    assert limits.requests.rate == 6000
    limits.rejected(2.0, "GenerateRequestsPerMinutePerProjectPerModel")
    assert limits.requests.rate < 6000


def test_bucket_rate_can_be_changed_in_place() -> None:
    bucket = _bucket(1200)  # 20/s with a burst of half a second
    assert bucket.max_rate == 10
    _set_rate(bucket, 600)
    assert bucket._rate_per_sec == 10  # aiolimiter's drip rate, which it reads on every leak
    assert bucket.time_period == pytest.approx(1.0)
