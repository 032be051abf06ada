"""The outage breaker on an injected clock: opening, probing, closing and giving up."""

from __future__ import annotations

import asyncio
import math
import random

import pytest

from batchgen.backends.online.breaker import Breaker
from batchgen.backends.online.concurrency import concurrency_for
from batchgen.backends.online.rate import RateLimits
from batchgen.errors import RunStoppedError
from batchgen.job.spec import LimitsSpec
from tests.helpers.clock import Clock, VirtualTime


def breaker(clock: Clock, **kwargs: float) -> Breaker:  # outage_minutes
    return Breaker(clock=clock, sleep=clock.sleep, where="http://proxy", **kwargs)


def fail(b: Breaker, times: int = 1, sent_at: float | None = None) -> list[bool]:
    return [b.record(False, True, sent_at) for _ in range(times)]


def test_scattered_server_errors_never_open_it() -> None:
    b = breaker(Clock(1000.0))
    for _ in range(50):
        fail(b, 9)
        b.record(True, False)
    assert b.state == "closed" and b.poll() is None


def test_ten_server_failures_in_a_row_open_it_and_probes_slow_down() -> None:
    clock = Clock(1000.0)
    b = breaker(clock)
    assert fail(b, 10) == [True] * 9 + [False]  # the failure that opens it spends no attempt
    assert b.state == "open"
    waits = []
    for _ in range(7):
        wait = b.poll()
        while wait:
            waits.append(wait)
            clock.now += wait
            wait = b.poll()
        assert b.state == "probing" and b.poll() > 0  # one probe at a time
        assert fail(b) == [False]
    assert waits == [5, 10, 20, 40, 60, 60, 60]
    assert b.probes == 7


def test_a_probe_that_succeeds_closes_it() -> None:
    clock = Clock(1000.0)
    b = breaker(clock)
    fail(b, 10)
    clock.now += 5
    assert b.poll() is None  # this caller is the probe
    sent = clock.now
    clock.now += 2
    assert b.record(True, False, sent)
    assert b.state == "closed" and b.failures == 0 and b.poll() is None


def test_answers_to_calls_sent_before_the_outage_do_not_hide_it() -> None:
    """At 30 s latency, calls sent before a 503 storm keep succeeding for 30 s after it began."""
    clock = Clock(1000.0)
    b = breaker(clock)
    before = clock.now
    clock.now += 1
    for _ in range(10):
        fail(b)
        b.record(True, False, sent_at=before)  # an old call's answer arrives
    assert b.state == "open"
    b.record(True, False, sent_at=before)
    assert b.state == "open"


def test_a_429_or_a_bad_answer_shows_the_server_is_up() -> None:
    b = breaker(Clock(1000.0))
    fail(b, 9)
    b.record(False, server_side=False)  # a 429: the server answered
    fail(b, 9)
    assert b.state == "closed"


async def test_after_outage_minutes_open_admit_stops_the_run() -> None:
    clock = Clock(1000.0)
    b = breaker(clock, outage_minutes=2)
    fail(b, 10)
    b.note("503 UNAVAILABLE: The model is overloaded.")
    probes = 0
    with pytest.raises(RunStoppedError) as info:
        while True:
            assert await b.admit()  # it waits each time
            probes += 1
            fail(b)
    assert clock.now == pytest.approx(1000 + 120)
    assert probes == b.probes == 4  # at 5, 15, 35 and 75 s; the next would be at 135 s
    assert info.value.exit_code == 4
    assert str(info.value) == (
        "http://proxy: every call failed server-side for 2 minutes (last: 503 UNAVAILABLE: The "
        "model is overloaded.), 4 probes included; rerun later to resume"
    )


async def test_a_storm_costs_the_threshold_and_the_probes_then_the_run_goes_on() -> None:
    """One worker against a server that answers 503 from t=30 s to t=150 s (at once) and
    otherwise takes 0.5 s: calls during the storm are the threshold plus the probes."""
    clock = Clock(1000.0)
    b = breaker(clock)
    start = clock.now
    storm_calls = answered = 0
    while answered < 400:
        await b.admit()
        sent = clock.now
        if 30 <= clock.now - start < 150:
            storm_calls += 1
            b.record(False, True, sent)
        else:
            clock.now += 0.5
            answered += 1
            b.record(True, False, sent)
    assert b.state == "closed"
    # probes 5, 15, 35 and 75 s after it opened at 30 s failed; the one at 135 s (t=165) worked
    assert (storm_calls, b.probes) == (10 + 4, 5)


async def test_waiting_callers_go_when_a_probe_succeeds() -> None:
    clock = Clock(1000.0)
    never: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def sleep_forever(seconds: float) -> None:
        await never  # only a state change may wake the waiters here

    b = Breaker(clock=clock, sleep=sleep_forever)
    fail(b, 10)
    clock.now += 5
    assert not await b.admit()  # due at once, no wait: this is the probe
    probe_sent = clock.now
    waiting = [asyncio.create_task(b.admit()) for _ in range(20)]
    dispatcher = asyncio.create_task(b.wait_closed())
    await asyncio.sleep(0)
    assert not any(task.done() for task in [*waiting, dispatcher])
    b.record(True, False, probe_sent)
    done, _ = await asyncio.wait([*waiting, dispatcher], timeout=1)
    assert len(done) == 21 and b.state == "closed"
    assert all(task.result() for task in waiting)  # they waited: their limiter turns are stale


async def test_taking_new_rows_never_makes_the_probe() -> None:
    clock = Clock(1000.0)
    b = breaker(clock, outage_minutes=1)
    fail(b, 10)
    clock.now += 30  # a probe is due, but only an attempt may be it
    assert b.poll(probe=False) == pytest.approx(30) and b.state == "open"
    with pytest.raises(RunStoppedError):
        await b.wait_closed()  # nobody probes here: the outage limit comes
    assert b.probes == 0


async def test_a_two_minute_storm_at_ten_second_latency_loses_no_row() -> None:
    """Rows dispatched by the automatic concurrency through the rate limiter and the breaker,
    in simulated time: 10 s answers at 10/s, and 503 at once to every call from 60 s to 180 s.
    Answers to calls sent before the storm keep arriving during it and must not close the
    breaker; the rows that failed wait without spending attempts and all end answered."""
    time = VirtualTime()
    limits = RateLimits(600, clock=time, sleep=time.sleep)
    controller = concurrency_for(LimitsSpec(), limits)
    b = Breaker(clock=time, sleep=time.sleep)
    dice = random.Random(5)
    storm_calls, answered, lost, tasks = [0], [0], [0], set()

    async def row(slot: int) -> None:
        attempts = 0
        try:
            while attempts < 5:
                sent = await limits.acquire(100)
                if await b.admit():
                    sent = await limits.acquire(100)
                controller.sending(slot)
                if 60 <= time.now < 180:
                    storm_calls[0] += 1
                    attempts += b.record(False, True, sent)
                    await time.sleep(1.0)  # the retry policy's backoff
                    continue
                latency = 10 * math.exp(0.4 * dice.gauss(0.0, 1.0))
                await time.sleep(latency)
                controller.observe(latency)
                b.record(True, False, sent)
                answered[0] += 1
                return
            lost[0] += 1
        finally:
            controller.release(slot)

    async def dispatcher(rows: int) -> None:
        for _ in range(rows):
            await b.wait_closed()  # no new rows while the breaker is open
            task = asyncio.create_task(row(await controller.acquire()))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    main = asyncio.create_task(dispatcher(2400))
    await time.run_until(600)
    await asyncio.gather(main, *tasks)
    assert (answered[0], lost[0]) == (2400, 0)
    # the breaker's ten failures, then one probe after 5, 15, 35 and 75 s (the next, 135 s after
    # it opened at ~61 s, comes after the storm and succeeds)
    assert storm_calls[0] == 10 + 4 and b.probes == 5
