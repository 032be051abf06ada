"""The open-file limit (``ulimit -n``): automatic concurrency stays under it, and running out of
descriptors is never mistaken for an unreachable API."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from batchgen.backends.online.concurrency import concurrency_for, connection_limit
from batchgen.backends.online.descriptors import FileRoom, file_room
from batchgen.backends.online.rate import RateLimits
from batchgen.backends.stopping import StopControl, TransportWatch
from batchgen.emulator import EmulatorConfig, EmulatorThread
from batchgen.gemini.transport import Transport
from batchgen.job.spec import LimitsSpec, ModelSpec
from tests.helpers.clock import Clock
from tests.helpers.jobs import item_job

resource = pytest.importorskip("resource")  # POSIX only

KEY = "descriptor-test-key-0123456789"


def test_auto_concurrency_is_capped_by_the_room_and_says_so_once() -> None:
    clock = Clock()
    limits = RateLimits(12_000, clock=clock)
    notes: list[str] = []
    room = FileRoom(connections=180, limit=256)
    controller = concurrency_for(LimitsSpec(), limits, room, notes.append)
    for _ in range(20):
        controller.observe(10.0)  # 200 calls a second x 10 s: auto wants 2,400 in flight
        clock.now += 1
        assert controller.target == 180
    assert notes == [room.note()]
    assert "ulimit -n" in notes[0] and "256" in notes[0]
    assert connection_limit(LimitsSpec(), room) == 180
    assert connection_limit(LimitsSpec(), None) == LimitsSpec().max_concurrency


def test_a_pinned_concurrency_past_the_room_is_lowered_and_said_at_once() -> None:
    notes: list[str] = []
    room = FileRoom(connections=180, limit=256)
    controller = concurrency_for(LimitsSpec(concurrency=500), RateLimits(1000), room, notes.append)
    assert controller.target == 180 and notes == [room.note()]
    notes.clear()
    controller = concurrency_for(LimitsSpec(concurrency=50), RateLimits(1000), room, notes.append)
    assert controller.target == 50 and notes == []


def test_the_soft_limit_is_raised_toward_the_hard_one() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1024:
        pytest.skip("the hard limit leaves nothing to raise")
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
    try:
        room = file_room(600)
        assert room is not None and room.connections >= 600
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == room.limit > 256
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.parametrize("code", [errno.EMFILE, errno.ENFILE])
async def test_out_of_descriptors_is_its_own_failure_and_not_unreachable(
    tmp_path: Path, code: int
) -> None:
    async with aiohttp.ClientSession() as session:
        model = ModelSpec(name="gemini-2.5-flash-lite", base_url="http://127.0.0.1:9")
        transport = Transport(session, model, KEY, 10.0)
        wrapped = aiohttp.ClientOSError(code, os.strerror(code))
        with pytest.raises(Exception) as caught, transport.errors():
            raise wrapped
    exc = caught.value
    assert getattr(exc, "category", None) == "open_files", exc
    assert "ulimit -n" in str(exc) and "limits.max_concurrency" in str(exc)
    stop = StopControl(tmp_path, grace=1)
    watch = TransportWatch(stop, "here", after=3)
    for _ in range(10):
        watch.saw("open_files", str(exc))
    assert stop.reason is None and watch.failures == 0


def test_a_run_under_a_low_open_file_limit_finishes_every_row(tmp_path: Path) -> None:
    rows = 600
    path = item_job(tmp_path, rows, limits={"requests_per_minute": 12_000})

    def lower() -> None:  # soft and hard: batchgen cannot raise itself past it
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))

    with EmulatorThread(EmulatorConfig(latency_ms=1500)) as server:
        done = subprocess.run(
            [sys.executable, "-m", "batchgen", "run", str(path), "--base-url", server.base_url,
             "--quiet"],
            env={**os.environ, "GEMINI_API_KEY": KEY}, capture_output=True, text=True,
            timeout=120, preexec_fn=lower,
        )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{rows} rows done, 0 failed" in done.stdout
    assert f"\n{rows} requests;" in done.stdout  # not one call failed for want of a descriptor
    notes = [line for line in done.stdout.splitlines() if "open-file limit" in line]
    assert len(notes) == 1, done.stdout
    assert "(ulimit -n) is 256" in notes[0]
