"""Concurrency from Little's law and the per-day request count, on injected clocks."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest

from batchgen.backends.online.concurrency import (
    ConcurrencyController,
    concurrency_for,
    connection_limit,
)
from batchgen.backends.online.daily import DailyQuota
from batchgen.backends.online.rate import RateLimits
from batchgen.errors import JobError, QuotaExhaustedError
from batchgen.job.spec import LimitsSpec, load_job
from tests.helpers.clock import Clock
from tests.helpers.jobs import MINIMAL
from tests.helpers.paths import write_job


async def settle() -> None:
    """Let woken tasks run (asyncio.wait takes a few turns of the loop)."""
    for _ in range(5):
        await asyncio.sleep(0)


def controller(per_second: float, clock: Clock, **kwargs: int) -> ConcurrencyController:
    return ConcurrencyController(lambda: per_second, clock=clock, **kwargs)


def test_it_starts_small_then_keeps_rate_times_latency_in_flight() -> None:
    clock = Clock(1000.0)
    ctl = controller(20, clock)  # 1,200 requests a minute
    assert ctl.target == 8  # nothing known yet
    for _ in range(100):
        ctl.observe(2.0)
    clock.now += 1
    assert ctl.target == 48  # 20/s x 2 s x 1.2 headroom
    assert ctl.latency() == 2.0


def test_the_slow_tail_sets_the_latency_not_the_average() -> None:
    clock = Clock(1000.0)
    ctl = controller(20, clock)
    for latency in [1.0] * 80 + [10.0] * 20:  # a fifth of the calls take ten times longer
        ctl.observe(latency)
    clock.now += 1
    assert ctl.latency() == 10.0 and ctl.target == 240


def test_it_is_capped_never_below_one_and_pinned_when_asked() -> None:
    clock = Clock(1000.0)
    fast = controller(3000 / 60, clock, cap=2048)
    slow = controller(0.1, clock)
    pinned = controller(50, clock, pinned=16)
    for ctl in (fast, slow, pinned):
        for _ in range(50):
            ctl.observe(60.0 if ctl is fast else 0.5)
    clock.now += 1
    assert (fast.target, slow.target, pinned.target) == (2048, 1, 16)


async def test_calls_still_in_flight_raise_the_target_before_any_answer() -> None:
    """At 30 s answers nothing completes for 30 s: the ages of the calls say it is slow."""
    clock = Clock(1000.0)
    ctl = controller(50, clock)  # 3,000 a minute
    slots = [await ctl.acquire() for _ in range(8)]
    for slot in slots:
        ctl.sending(slot)
    assert ctl.in_flight == 8 and ctl.target == 8
    clock.now += 10  # ten seconds without an answer
    assert ctl.target == 600  # 50/s x 10 s (the 90th percentile of their ages) x 1.2
    for slot in slots:
        ctl.release(slot)


async def test_waiting_for_the_rate_limiter_is_not_latency() -> None:
    clock = Clock(1000.0)
    ctl = controller(50, clock)
    slots = [await ctl.acquire() for _ in range(8)]  # queued at the limiter, none sent yet
    clock.now += 10
    assert ctl.target == 8
    ctl.sending(slots[0])
    clock.now += 2
    assert ctl.target == 120  # 50/s x 2 s x 1.2: the one call sent, not the ten seconds queued
    for slot in slots:
        ctl.release(slot)


def test_the_latency_window_is_bounded_and_follows_a_change() -> None:
    clock = Clock(1000.0)
    ctl = controller(10, clock)
    for _ in range(5000):
        ctl.observe(30.0)
    for _ in range(300):
        ctl.observe(1.0)  # the model got faster
    clock.now += 1
    assert ctl.latency() == 1.0 and ctl.target == 12


async def test_the_slot_gate_admits_up_to_the_target_and_wakes_on_release() -> None:
    ctl = controller(50, Clock(1000.0), pinned=2)
    entered: list[int] = []

    async def call(i: int, done: asyncio.Event) -> None:
        async with ctl.slot():
            entered.append(i)
            await done.wait()

    done = [asyncio.Event() for _ in range(3)]
    tasks = [asyncio.create_task(call(i, done[i])) for i in range(3)]
    await asyncio.sleep(0)
    assert entered == [0, 1] and ctl.in_flight == 2
    done[0].set()
    await settle()
    assert entered == [0, 1, 2]
    for event in done:
        event.set()
    await asyncio.gather(*tasks)
    assert ctl.in_flight == 0


async def test_waiting_calls_go_as_soon_as_answers_raise_the_target() -> None:
    clock = Clock(1000.0)
    ctl = controller(20, clock, start=1)
    first = await ctl.acquire()
    waiting = [asyncio.create_task(ctl.acquire()) for _ in range(5)]
    await asyncio.sleep(0)
    assert not any(task.done() for task in waiting)
    clock.now += 1
    ctl.observe(1.0)  # 20/s x 1 s x 1.2: 24 may be in flight
    await settle()
    assert all(task.done() for task in waiting) and ctl.in_flight == 6
    for slot in [first, *(task.result() for task in waiting)]:
        ctl.release(slot)


async def test_a_cancelled_waiter_leaves_no_slot_behind() -> None:
    ctl = controller(50, Clock(1000.0), pinned=1)
    held = await ctl.acquire()
    waiter = asyncio.create_task(ctl.acquire())
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    ctl.release(held)
    assert ctl.in_flight == 0
    assert await asyncio.wait_for(ctl.acquire(), 1) >= 0


def test_the_runs_controller_follows_the_rate_limits() -> None:
    clock = Clock(1000.0)
    limits = RateLimits(1200, clock=clock)
    auto = concurrency_for(LimitsSpec(max_concurrency=100), limits)
    for _ in range(20):
        auto.observe(2.0)
    clock.now += 1
    assert (auto.target, auto.cap) == (48, 100)  # 20/s x 2 s x 1.2
    limits.requests.rate = 600  # after a 429 the allowed rate is lower: so is the target
    clock.now += 1
    assert auto.target == 24
    pinned = concurrency_for(LimitsSpec(concurrency=5), limits)
    assert pinned.target == 5


def test_the_connection_pool_matches_the_most_calls_in_flight() -> None:
    assert connection_limit(LimitsSpec()) == 2048
    assert connection_limit(LimitsSpec(max_concurrency=300)) == 300
    assert connection_limit(LimitsSpec(concurrency=16)) == 16


# --- requests per Pacific day --------------------------------------------------------------


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def test_the_day_count_refuses_at_the_quota_and_resets_at_midnight_pacific() -> None:
    now = [utc("2026-12-02 07:30")]  # 23:30 on December 1 in California (PST, UTC-8)
    quota = DailyQuota(3, clock=lambda: now[0])
    for _ in range(3):
        assert quota.allows()
        quota.spend()
    assert not quota.allows()
    assert quota.resets_at() == utc("2026-12-02 08:00")
    error = quota.exhausted()
    assert isinstance(error, QuotaExhaustedError) and error.exit_code == 5
    assert str(error) == (
        "limits.requests_per_day: 3 of 3 requests sent on 2026-12-01 (Pacific time); the quota "
        "resets at midnight Pacific (2026-12-02 08:00 UTC): rerun then to resume"
    )
    now[0] = utc("2026-12-02 08:00")  # midnight Pacific: a new day
    assert quota.allows(3) and not quota.allows(4)


def test_earlier_runs_count_only_on_the_same_pacific_day() -> None:
    clock = lambda: utc("2026-07-15 20:00")  # noqa: E731  13:00 PDT
    same_day = DailyQuota(100, used=98, used_on=utc("2026-07-15 08:00"), clock=clock)
    day_before = DailyQuota(100, used=98, used_on=utc("2026-07-15 06:00"), clock=clock)
    assert same_day.allows(2) and not same_day.allows(3)
    assert day_before.allows(100)
    assert same_day.resets_at() == utc("2026-07-16 07:00")  # PDT: UTC-7 in summer
    assert DailyQuota(None, used=10**9, clock=clock).allows(10**6)


# --- the job keys ------------------------------------------------------------------------------


def test_concurrency_is_automatic_unless_pinned(tmp_path: Path) -> None:
    auto = load_job(write_job(tmp_path, MINIMAL)).limits
    assert auto.concurrency == "auto" and auto.pinned is None and auto.max_concurrency == 2048
    assert auto.requests_per_day is None
    text = MINIMAL + "[limits]\nconcurrency = 'auto'\nmax_concurrency = 500\n"
    named = load_job(write_job(tmp_path, text, "named.toml")).limits
    assert named.concurrency == "auto" and named.max_concurrency == 500
    text = MINIMAL + "[limits]\nconcurrency = 12\nrequests_per_day = 10000\n"
    pinned = load_job(write_job(tmp_path, text, "pinned.toml")).limits
    assert pinned.concurrency == pinned.pinned == 12
    assert pinned.requests_per_day == 10000
    text = MINIMAL + "[retry]\noutage_minutes = 2.5\n"
    assert load_job(write_job(tmp_path, text, "retry.toml")).retry.outage_minutes == 2.5


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            "concurrency = 'lots'",
            "limits.concurrency must be a whole number or \"auto\", not 'lots'",
        ),
        ("concurrency = true", 'limits.concurrency must be a whole number or "auto", not True'),
        ("max_concurrency = 0", "limits.max_concurrency must be > 0, not 0"),
        ("requests_per_day = -1", "limits.requests_per_day must be > 0, not -1"),
    ],
)
def test_bad_limits_name_the_file_and_key(tmp_path: Path, extra: str, message: str) -> None:
    path = write_job(tmp_path, MINIMAL + f"[limits]\n{extra}\n")
    with pytest.raises(JobError) as info:
        load_job(path)
    assert str(info.value) == f"{path}: {message}"
