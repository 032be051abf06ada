"""The retry policy, driven with a fake sleep: no test here waits for real."""

from __future__ import annotations

import time

import pytest

from batchgen.backends.online.rate import RateLimits
from batchgen.backends.online.retry import DeadlineError, RetryPolicy, RowDeadline
from batchgen.gemini.answers import AnswerError
from batchgen.gemini.client import ApiError
from batchgen.job.spec import RetrySpec
from tests.helpers.clock import Clock


class FakeSleep:
    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


async def drive(policy: RetryPolicy, failures: list[Exception]) -> tuple[int, str]:
    """Run one row whose first calls raise ``failures``; return (attempts, outcome)."""
    attempt = 0
    try:
        async for retrying in policy.for_row():
            with retrying:
                attempt = retrying.retry_state.attempt_number
                if attempt <= len(failures):
                    raise failures[attempt - 1]
                return attempt, "ok"
    except (ApiError, AnswerError) as exc:
        return attempt, type(exc).__name__
    raise AssertionError


SPEC = RetrySpec(attempts=5, answer_attempts=2, backoff_initial_seconds=1, backoff_max_seconds=8)


async def test_server_retry_delay_is_honoured() -> None:
    sleep = FakeSleep()
    failures: list[Exception] = [
        ApiError("rate_limited", "slow down", 429, retry_delay=26.5),
        ApiError("server", "overloaded", 503),
    ]
    assert await drive(RetryPolicy(SPEC, sleep), failures) == (3, "ok")
    assert sleep.waits[0] == 26.5
    assert 2 <= sleep.waits[1] <= 3  # exponential: initial * 2 ** 1, plus up to 1 s jitter


async def test_backoff_is_exponential_and_capped() -> None:
    sleep = FakeSleep()
    failures: list[Exception] = [ApiError("server", "x", 500) for _ in range(4)]
    assert await drive(RetryPolicy(SPEC, sleep), failures) == (5, "ok")
    assert [int(w) for w in sleep.waits] == [1, 2, 4, 8]


async def test_attempts_are_bounded() -> None:
    sleep = FakeSleep()
    failures: list[Exception] = [ApiError("connection", "reset", None) for _ in range(9)]
    assert await drive(RetryPolicy(SPEC, sleep), failures) == (5, "ApiError")
    assert len(sleep.waits) == 4


@pytest.mark.parametrize("status", [400, 413])
async def test_client_errors_are_not_retried(status: int) -> None:
    sleep = FakeSleep()
    failures: list[Exception] = [ApiError(f"http_{status}", "bad request", status)]
    assert await drive(RetryPolicy(SPEC, sleep), failures) == (1, "ApiError")
    assert sleep.waits == []


async def test_answer_failures_have_their_own_budget() -> None:
    sleep = FakeSleep()
    policy = RetryPolicy(SPEC, sleep)
    safety = [AnswerError("safety", "blocked"), AnswerError("schema", "bad")]
    assert await drive(policy, safety) == (2, "AnswerError")
    # transient failures do not use up the answer budget
    mixed: list[Exception] = [ApiError("server", "x", 503), AnswerError("invalid_json", "cut")]
    assert await drive(policy, mixed) == (3, "ok")


async def test_no_retry_after_the_row_deadline() -> None:
    policy = RetryPolicy(RetrySpec(attempts=10, row_deadline_seconds=0.001), FakeSleep())
    calls = 0
    try:
        async for retrying in policy.for_row():
            with retrying:
                calls += 1
                time.sleep(0.01)  # the call itself outlasts the row's deadline
                raise ApiError("server", "x", 503)
    except ApiError:
        pass
    assert calls == 1


async def test_the_deadline_counts_from_a_first_call_made_before_the_loop() -> None:
    # The runner makes a row's first call itself and enters the loop only when it fails: the
    # failure is replayed as attempt 1, and the 6 s that call took count against the deadline.
    policy = RetryPolicy(RetrySpec(attempts=10, row_deadline_seconds=5), FakeSleep())
    calls = 0
    with pytest.raises(ApiError):
        async for retrying in policy.for_row(started=time.monotonic() - 6):
            with retrying:
                calls += 1
                raise ApiError("server", "x", 503)
    assert calls == 1
    calls = 0
    async for retrying in policy.for_row(started=time.monotonic() - 1):
        with retrying:
            calls += 1
            if calls == 1:
                raise ApiError("server", "x", 503)
    assert calls == 2


@pytest.mark.parametrize(("cap", "waited"), [(None, 300.0), (5.0, 5.0), (7200.0, 3600.0)])
async def test_a_server_delay_is_waited_at_most_the_cap(cap: float | None, waited: float) -> None:
    sleep = FakeSleep()
    deadline = 3 * 3600  # longer than any wait here: the cap alone decides
    spec = RetrySpec(row_deadline_seconds=deadline, max_server_delay_seconds=cap or 300)
    failures: list[Exception] = [ApiError("server", "come back in an hour", 503, retry_delay=3600)]
    assert await drive(RetryPolicy(spec, sleep), failures) == (2, "ok")
    assert sleep.waits == [waited]


@pytest.mark.parametrize(
    ("failure", "asked"),
    [
        (ApiError("rate_limited", "slow down", 429, retry_delay=300, asked_delay=3600), 3600),
        (ApiError("server", "HTTP 503: busy", 503, retry_delay=30), 30),
    ],
)
async def test_a_server_wait_past_the_row_deadline_fails_the_row_as_a_timeout(
    failure: ApiError, asked: float
) -> None:
    time_ = Clock(1000.0)
    policy = RetryPolicy(RetrySpec(row_deadline_seconds=10), time_.sleep, time_)
    with pytest.raises(DeadlineError) as caught:
        async for retrying in policy.for_row(started=time_()):
            with retrying:
                raise failure
    assert time_.slept == []  # it did not wait the server's delay, nor any part of it
    exc = caught.value
    assert (exc.category, exc.status, exc.retryable) == ("timeout", failure.status, False)
    assert exc.message.startswith(failure.message)
    assert f"the server asked to wait {asked} s; that passes retry.row_deadline_seconds = 10" in (
        exc.message
    )


async def test_a_server_wait_within_the_row_deadline_is_waited() -> None:
    time_ = Clock(1000.0)
    policy = RetryPolicy(RetrySpec(row_deadline_seconds=10), time_.sleep, time_)
    failures: list[Exception] = [ApiError("rate_limited", "slow down", 429, retry_delay=4)]
    assert await drive(policy, failures) == (2, "ok")
    assert time_.slept == [4]


async def test_no_backoff_runs_past_the_row_deadline() -> None:
    time_ = Clock(1000.0)
    spec = RetrySpec(attempts=50, row_deadline_seconds=20, backoff_initial_seconds=1)
    policy = RetryPolicy(spec, time_.sleep, time_)
    started = time_()
    failures: list[Exception] = [ApiError("server", "HTTP 500: x", 500) for _ in range(50)]
    # the last error stands (the deadline stopped a backoff, not a wait the server asked for)
    assert (await drive(policy, failures))[1] == "ApiError"
    assert time_.now - started < 20 and sum(time_.slept) < 20


async def test_a_pause_of_every_call_past_the_row_deadline_fails_the_row_at_once() -> None:
    time_ = Clock(1000.0)
    limits = RateLimits(60_000, clock=time_, sleep=time_.sleep)
    limits.rejected(300.0, None, await limits.acquire(1))  # a 429: every call pauses 300 s
    time_.slept.clear()
    with pytest.raises(DeadlineError) as caught:
        await limits.acquire(1, RowDeadline(time_() + 10, 10))
    assert time_.slept == []
    assert caught.value.category == "timeout"
    assert "the server asked every call to wait 300 s; that passes " in caught.value.message
    # a row with time enough waits the pause out
    sent = await limits.acquire(1, RowDeadline(time_() + 900, 900))
    assert sent >= 1300 and time_.slept and sum(time_.slept) >= 300
