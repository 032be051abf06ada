"""The adaptive rate controller on an injected clock: no test here sleeps."""

from __future__ import annotations

import bisect

import pytest

from batchgen.backends.online.rate import PACE, AdaptiveRate, Bucket, RateLimits
from tests.helpers.clock import Clock


def feed(rate: AdaptiveRate, clock: Clock, per_minute: float, seconds: float) -> None:
    """The server accepts ``per_minute`` requests per minute for ``seconds``."""
    step = 60 / per_minute
    end = clock.now + seconds
    while clock.now < end:
        rate.accepted()
        clock.now += step


def test_a_429_while_saturating_settles_just_under_what_the_server_accepted() -> None:
    clock = Clock(1000.0)
    rate = AdaptiveRate(2400, clock)  # configured twice too high
    feed(rate, clock, 1200, 60)  # the server took 1,200 in the last minute
    assert rate.rejected(delay=30)
    sends = rate.rate * PACE  # what the bucket lets out a minute at that rate
    assert sends == pytest.approx(1200 * 0.98, rel=0.005)


def test_past_where_the_server_last_said_no_the_rate_climbs_a_quarter_as_fast() -> None:
    clock = Clock(1000.0)
    rate = AdaptiveRate(2400, clock)  # climbs 24 a minute
    feed(rate, clock, 1200, 60)
    rate.rejected(delay=1)
    low = rate.rate
    clock.now += 1
    feed(rate, clock, 1200 * 0.98, 30)  # below the limit shown: the full climb
    assert rate.rate == pytest.approx(low + 12, abs=0.5)
    near = 1200 * 0.995 / PACE  # the rate at which the bucket sends 99.5% of that limit
    feed(rate, clock, 1200, 300)  # past it after 16 s, then a quarter as fast: 6 a minute
    climbed = (near - low - 12) / 24 * 60  # seconds at the full climb
    assert rate.rate == pytest.approx(near + (300 - climbed) / 60 * 6, abs=1.5)


def test_a_burst_of_429s_steps_down_once() -> None:
    clock = Clock(1000.0)
    rate = AdaptiveRate(1000, clock)
    feed(rate, clock, 1000, 60)
    assert rate.rejected(delay=5)
    first = rate.rate
    clock.now += 1
    assert not rate.rejected(delay=5)  # the same burst
    assert rate.rate == first


def test_without_a_saturated_window_the_rate_is_cut_by_a_factor() -> None:
    clock = Clock(1000.0)
    rate = AdaptiveRate(1000, clock)
    feed(rate, clock, 100, 60)  # little traffic: someone else shares the quota
    rate.rejected(delay=1)
    assert rate.rate == pytest.approx(700)


def test_the_rate_climbs_back_one_percent_of_the_configured_rate_a_minute() -> None:
    clock = Clock(1000.0)
    rate = AdaptiveRate(1000, clock)
    feed(rate, clock, 100, 60)  # a 429 that shows no limit: a step by a factor
    rate.rejected(delay=2)
    low = rate.rate
    assert low == pytest.approx(700)
    clock.now += 2  # the pause
    feed(rate, clock, low, 300)  # five quiet minutes
    assert rate.rate == pytest.approx(low + 5 * 10, abs=2)
    feed(rate, clock, rate.rate, 3600)
    assert rate.rate == 1000  # never above the configured rate


def test_the_rate_has_a_floor() -> None:
    clock = Clock(1000.0)
    rate = AdaptiveRate(1000, clock)
    for _ in range(30):
        clock.now += 120
        rate.rejected(delay=1)
    assert rate.rate == pytest.approx(20)


async def no_wait(seconds: float) -> None:
    """The limiter's sleep, for tests that look only at what it learns."""


async def test_token_estimates_learn_from_real_counts() -> None:
    limits = RateLimits(6000, tokens_per_minute=10**6, clock=Clock(1000.0), sleep=no_wait)
    assert limits.estimate(100) == 100
    for _ in range(50):
        await limits.settle(estimated=100, charged=limits.estimate(100), actual=150)
    assert limits.estimate(100) == pytest.approx(150, abs=2)


async def test_a_token_429_steps_down_the_token_rate_only() -> None:
    clock = Clock(1000.0)
    limits = RateLimits(6000, tokens_per_minute=100_000, clock=clock)
    limits.rejected(2.0, "GenerateContentInputTokensPerModelPerMinute-FreeTier")
    assert limits.tokens is not None and limits.tokens.rate < 100_000
    assert limits.requests.rate == 6000
    limits.rejected(2.0, "GenerateRequestsPerMinutePerProjectPerModel")
    assert limits.requests.rate < 6000


def test_the_bucket_hands_out_turns_in_order_and_restarts_full_after_a_pause() -> None:
    clock = Clock(1000.0)
    # 20/s (a minute and a half-second burst within 99.5% of the limit), a burst of 0.5 s
    bucket = Bucket(20 * 60.5 / 0.995, clock)
    assert bucket.per_second == pytest.approx(20)
    assert bucket.capacity == pytest.approx(10)
    waits = [bucket.take(1) for _ in range(4)]  # starts full: no burst at the start
    assert waits == pytest.approx([0.05, 0.10, 0.15, 0.20])
    bucket.set_rate(10 * 60.5 / 0.995)  # later turns drip at the new rate
    assert bucket.take(1) == pytest.approx(0.5)  # the fifth turn: 5 over the burst at 10/s
    clock.now += 60  # a lull refills the burst allowance
    assert [bucket.take(1) for _ in range(9)] == [0.0] * 9
    bucket.restart(at=clock.now + 5)  # a 5 s pause: what was handed out is forgotten
    clock.now += 5
    assert bucket.take(1) == pytest.approx(0.1)


def test_accepted_requests_count_when_they_were_sent() -> None:
    """With 10 s answers, what the server accepted in the last minute is what was sent in it."""
    clock = Clock(1000.0)
    rate = AdaptiveRate(2400, clock)
    for i in range(1200):  # sent over the last minute at 20/s, answered 10 s later
        rate.accepted(1, sent_at=clock.now - 60 + i / 20)
    assert rate.observed() == 1200
    assert rate.rejected(delay=1)
    assert rate.rate * PACE == pytest.approx(1200 * 0.98)


async def test_the_buckets_start_full_at_the_first_request_not_at_construction() -> None:
    """Checks and an input scan may take minutes before the first request: no burst then."""
    clock = Clock(1000.0)
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        clock.now += seconds

    limits = RateLimits(1200, clock=clock, sleep=sleep)
    clock.now += 300
    for _ in range(3):
        await limits.acquire(10)
    pace = 1200 * 0.995 / 60.5  # per second: see the next test
    assert waits == pytest.approx([1 / pace] * 3)  # paced from the first request on


async def test_no_sliding_minute_holds_more_than_the_limit_with_a_burst_after_a_lull() -> None:
    """A slow start (calls held back by the concurrency, not the rate), a lull that fills the
    burst allowance, then everything the limiter allows: the server's strict rolling window of
    60 s never sees more than the limit."""
    clock = Clock(1000.0)

    async def sleep(seconds: float) -> None:
        clock.now += seconds

    limits = RateLimits(3000, clock=clock, sleep=sleep)
    sent = []
    for _ in range(20):  # a ramp: one call every 0.2 s
        sent.append(await limits.acquire(10))
        clock.now += 0.2
    clock.now += 5  # the lull
    end = clock.now + 120
    while clock.now < end:  # as fast as the limiter lets calls go
        sent.append(await limits.acquire(10))
    busiest = max(bisect.bisect_left(sent, t + 60) - i for i, t in enumerate(sent))
    assert 2950 <= busiest <= 3000 * 0.995  # full, and within the margin


def test_a_second_wave_from_a_window_that_counts_refused_calls_does_not_step_down_again() -> None:
    clock = Clock(1000.0)
    rate = AdaptiveRate(2400, clock)  # configured twice too high
    feed(rate, clock, 2400, 30)  # half a minute at 2R fills a window of R
    assert rate.rejected(delay=30)  # until the first of them leaves
    settled = rate.rate
    assert settled * PACE == pytest.approx(1200 * 0.98, rel=0.01)
    clock.now += 30  # the pause: the calls refused during the first wave are still counted
    assert not rate.rejected(delay=1)  # a second wave: the pause again, but the same limit
    assert rate.rate == settled


def test_a_wave_after_the_last_one_has_left_the_window_steps_down_again() -> None:
    clock = Clock(1000.0)
    rate = AdaptiveRate(2400, clock)
    feed(rate, clock, 2400, 30)
    rate.rejected(delay=30)
    clock.now += 30
    feed(rate, clock, 700, 120)  # the server now takes less (someone shares the quota)
    assert rate.rejected(delay=1)
    assert rate.rate * PACE == pytest.approx(700 * 0.98, rel=0.02)
