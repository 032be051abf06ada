"""Signals at any moment of a run, from the process's first instant: one line, exit 4."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from batchgen.emulator import EmulatorConfig, EmulatorThread
from tests.helpers.emulator_calls import StartEmulator
from tests.helpers.jobs import make_job

KEY = "signal-key-7"


@pytest.fixture(scope="module")
def interpreter_start() -> float:
    """How long the interpreter itself takes to start here (before any code of batchgen runs,
    a signal is the interpreter's business, not batchgen's): the slowest of three."""
    times = []
    for _ in range(3):
        started = time.monotonic()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        times.append(time.monotonic() - started)
    return 1.5 * max(times)


@pytest.fixture(scope="module")
def emulator(module_emulator_factory: StartEmulator) -> EmulatorThread:
    return module_emulator_factory(EmulatorConfig(api_keys=frozenset({KEY}), latency_ms=200))


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
@pytest.mark.parametrize("after", [0.05, 0.15, 0.3, 0.6, 1.0, 2.0])
def test_a_signal_at_any_moment_is_one_line_and_exit_4(
    tmp_path: Path,
    emulator: EmulatorThread,
    interpreter_start: float,
    sig: signal.Signals,
    after: float,
) -> None:
    job = make_job(tmp_path, 400, concurrency=4)
    env = {**os.environ, "GEMINI_API_KEY": KEY}
    args = [sys.executable, "-m", "batchgen", "run", str(job), "--base-url", emulator.base_url,
            "--grace", "0.5", "--quiet"]  # fmt: skip
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(interpreter_start + after)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=60)
    err = stderr.decode()
    assert proc.returncode == 4, (stdout, err)
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and sig.name in lines[0], err
