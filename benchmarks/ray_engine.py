"""``--engine ray`` beside the local engine, and the quota actor's own ceiling.

    python benchmarks/ray_engine.py [--rows 3000] [--rpm 600] [--latency-ms 500]
                                    [--job-rpm N] [--only engines|ceiling]

engines: one emulator (a 600/min sliding-window quota, 0.5 s latency) in this process; the
same job (``requests_per_minute`` = the emulator's quota, or ``--job-rpm``) run by
``python -m batchgen run`` with the local engine, then with ``--engine ray`` (a local Ray
instance the run starts, 2 CPUs). For each: exit code, rows answered (each once), the 429
share, and the fraction of the quota used after the ramp (answers from 30 s after the first
call to the last answer, per minute, over the quota).

ceiling: a quota actor (the engine's own class) with a quota out of the way, and 8 concurrent
callers asking for leases of 1, 16 and 256 turns for 5 s each: lease calls a second and turns
(permits) a second it grants, so the request rate across a cluster it can pace.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from harness import write_input, write_job

from batchgen.emulator import EmulatorConfig, EmulatorThread

RAMP_S = 30.0


def engines(rows: int, rpm: int, latency_ms: float, job_rpm: int | None = None) -> None:
    config = EmulatorConfig(latency_ms=latency_ms, rpm_limit=rpm)
    with EmulatorThread(config) as server:
        for engine in ("local", "ray"):
            folder = Path(tempfile.mkdtemp(prefix=f"batchgen-ray-bench-{engine}-"))
            rows_csv = write_input(folder / "rows.csv", rows)
            job = write_job(folder, rows_csv, concurrency=None, rpm=job_rpm or rpm)
            print(_one(server, job, engine, rows, rpm), flush=True)


def _one(server: EmulatorThread, job: Path, engine: str, rows: int, rpm: int) -> str:
    counts = server.emulator.counts
    calls0, rejected0 = counts["generateContent"], counts["status:429"]
    samples: list[tuple[float, int]] = []  # (seconds since the first call, answers)
    stop = threading.Event()

    def sample() -> None:
        first = None
        while not stop.is_set():
            calls = counts["generateContent"] - calls0
            if calls and first is None:
                first = time.monotonic()
            if first is not None:
                answers = calls - (counts["status:429"] - rejected0)
                samples.append((time.monotonic() - first, answers))
            time.sleep(0.1)

    sampler = threading.Thread(target=sample)
    sampler.start()
    args = [sys.executable, "-m", "batchgen", "run", str(job), "--base-url", server.base_url,
            "--quiet", "--engine", engine]  # fmt: skip
    began = time.monotonic()
    done = subprocess.run(
        args, env={**os.environ, "GEMINI_API_KEY": "bench-key-0123456789"},
        capture_output=True, text=True, timeout=3600, check=False,
    )  # fmt: skip
    took = time.monotonic() - began
    stop.set()
    sampler.join()
    calls = counts["generateContent"] - calls0
    rejected = counts["status:429"] - rejected0
    end = next(t for t, a in samples if a >= samples[-1][1])  # the last answer
    at_ramp = max((a for t, a in samples if t <= RAMP_S), default=0)
    per_minute = (samples[-1][1] - at_ramp) / max(1e-9, end - RAMP_S) * 60
    summary = done.stdout.strip().splitlines()[:1]
    return (
        f"{engine:5}: {rows:,} rows at {rpm}/min: exit {done.returncode} in {took:.1f} s; "
        f"{calls:,} calls, {rejected} 429s ({rejected / max(1, calls):.2%}); after the "
        f"{RAMP_S:.0f} s ramp {per_minute:.0f}/min = {per_minute / rpm:.3f} of the quota; "
        f"{summary}"
    )


def ceiling(seconds: float = 5.0, callers: int = 8) -> None:
    import ray

    from batchgen.run.ray_engine import QuotaActor

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    try:
        for turns in (1, 16, 256):
            keeper = ray.remote(QuotaActor).options(num_cpus=0).remote(1e12, None, None, 0)
            ray.get(keeper.granted.remote())  # started
            leases = asyncio.run(_hammer(keeper, turns, seconds, callers))
            granted = ray.get(keeper.granted.remote())
            ray.kill(keeper)
            print(
                f"leases of {turns:>3} turns, {callers} callers, {seconds:g} s: "
                f"{leases / seconds:,.0f} lease calls/s, {granted / seconds:,.0f} turns/s "
                f"= {granted / seconds * 60:,.0f} requests/min across the cluster",
                flush=True,
            )
    finally:
        ray.shutdown()


async def _hammer(keeper: object, turns: int, seconds: float, callers: int) -> int:
    from batchgen.backends.online.shared import LeaseAsk

    end = time.monotonic() + seconds
    calls = 0

    async def one() -> None:
        nonlocal calls
        while time.monotonic() < end:
            await keeper.lease.remote(LeaseAsk(turns, 100))  # type: ignore[attr-defined]
            calls += 1

    await asyncio.gather(*(one() for _ in range(callers)))
    return calls


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=3000)
    parser.add_argument("--rpm", type=int, default=600)
    parser.add_argument("--latency-ms", type=float, default=500)
    parser.add_argument("--job-rpm", type=int, help="the job's limit (default: --rpm)")
    parser.add_argument("--only", choices=["engines", "ceiling"])
    args = parser.parse_args()
    if args.only in (None, "ceiling"):
        ceiling()
    if args.only in (None, "engines"):
        engines(args.rows, args.rpm, args.latency_ms, args.job_rpm)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
