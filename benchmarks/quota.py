"""Filling the quota at real latencies: the latency sweep, a strict window at 2R, a 503 storm.

- ``sweep``: the emulator answers after a lognormal latency (median 0.5, 2, 10 and 30 s, sigma
  0.4) and enforces R requests/min; batchgen runs with the job's defaults (no ``concurrency``
  key) and ``requests_per_minute = R``. Achieved ÷ R is counted after a ramp of a few latencies.
- ``strict``: the emulator's window of the requests it accepted in the last 60 s (each 429 says
  when the oldest leaves) at R = 1,200/min, answers after ~1 s; batchgen set to 2R with the
  job's default concurrency, 135 s, figures after the first minute.
- ``storm``: every call answers 503 for two minutes, from 30 s after the first call; batchgen
  runs its 600 rows to the end. Calls during the storm and rows answered are the emulator's.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from harness import EmulatorProcess, Poller, batchgen_cmd, child_env, run_child, write_job
from paced import run_paced
from scenarios import Context, Outcome
from strict_standin import StandinProcess

SIGMA = 0.4  # the lognormal spread: the slowest tenth take 1.7x the median


@dataclass(frozen=True)
class Case:
    median_s: float
    rpm: int
    ramp_s: float  # left out of the figures: the concurrency has to find the latency first
    window_s: float  # measured after the ramp


SWEEP = (
    Case(0.5, 1200, 15, 30),
    Case(2, 1200, 20, 30),
    Case(10, 1200, 40, 40),
    Case(30, 3000, 75, 45),
)
QUICK_SWEEP = (Case(0.5, 1200, 5, 10), Case(2, 1200, 8, 10))
# e.g. BATCHGEN_BENCH_SWEEP=30 runs only the 30 s case (medians in seconds, comma-separated)
ONLY_MEDIANS = os.environ.get("BATCHGEN_BENCH_SWEEP", "")


def sweep(ctx: Context, out: Outcome) -> None:
    """The job's defaults against R requests/min and a latency of median 0.5 to 30 s."""
    quick = ctx.sizes.rate_seconds < 60
    picked = {float(m) for m in ONLY_MEDIANS.split(",") if m.strip()}
    for case in QUICK_SWEEP if quick else SWEEP:
        if picked and case.median_s not in picked:
            continue
        seconds = case.ramp_s + case.window_s
        rows = int(case.rpm / 60 * seconds * 1.5) + case.rpm
        name = f"median {case.median_s:g} s, R {case.rpm}/min"
        with EmulatorProcess(
            rpm=case.rpm, latency_median_ms=case.median_s * 1000, latency_sigma=SIGMA
        ) as emulator:
            ctx.log(f"  sweep: {name}, {seconds:.0f} s")
            run = run_paced(
                ctx,
                emulator,
                f"sweep-{case.median_s:g}",
                rows,
                seconds,
                case.ramp_s,
                rpm=case.rpm,
                concurrency=None,  # type: ignore[arg-type]  # the job's default
            )
        late = run.late_ok / run.late_seconds * 60 / case.rpm if run.late_seconds > 0 else None
        out.notes.append(
            f"- sweep, {name}: {run.ok:,} answers, {run.rate_limited:,} 429s"
            f"{f' (at {run.when_rate_limited()})' if run.rate_limited else ''} of {run.calls:,} "
            f"calls in {run.seconds:.1f} s; after the {case.ramp_s:g} s ramp {run.late_ok:,} "
            f"answers in {run.late_seconds:.1f} s; batchgen exit {run.child.returncode}"
        )
        out.add("sweep", f"{name}: achieved ÷ R after ramp", late, "{:.3f}", "≥ 0.95",
                lambda v: v >= 0.95)  # fmt: skip
        out.add("sweep", f"{name}: 429s", run.rate_limited, "{:.0f}", "0", lambda v: v == 0)


STRICT_RPM = 1200


def strict(ctx: Context, out: Outcome) -> None:
    """Configured at 2R against a strict rolling 60 s window of accepted requests."""
    with EmulatorProcess(rpm=STRICT_RPM, latency_median_ms=1000, latency_sigma=SIGMA) as server:
        _strict(ctx, out, server, "strict", "window of accepted requests")


def strict_standin(ctx: Context, out: Outcome) -> None:
    """Configured at 2R against the stand-in's window of every request, 429s with Retry-After.

    The stand-in (``strict_standin.py``) is a proxy in front of an emulator with no limit.
    """
    mode = os.environ.get("BATCHGEN_BENCH_STANDIN", "retry-after")  # or "none"
    upstream = EmulatorProcess(latency_median_ms=1000, latency_sigma=SIGMA)
    with upstream, StandinProcess(upstream.base_url, STRICT_RPM, mode) as server:
        what = f"stand-in: window of every request, 429 with {mode}"
        _strict(ctx, out, server, "strict-standin", what)  # type: ignore[arg-type]


def _strict(ctx: Context, out: Outcome, server: EmulatorProcess, name: str, what: str) -> None:
    r, sizes = STRICT_RPM, ctx.sizes
    seconds, warmup = sizes.rate2_seconds, sizes.warmup_seconds
    # longer, to see the steady state past the first minute's step: several probes past the limit
    seconds = float(os.environ.get("BATCHGEN_BENCH_STRICT_SECONDS", seconds))
    rows = int(2 * r / 60 * seconds * 1.5) + 2 * r
    ctx.log(f"  {name}: batchgen at {2 * r}/min against {r}/min, ~1 s answers, {seconds:.0f} s")
    run = run_paced(
        ctx, server, name, rows, seconds, warmup, rpm=2 * r,
        concurrency=None,  # type: ignore[arg-type]
    )  # fmt: skip
    late = run.late_ok / run.late_seconds * 60 / r if run.late_seconds > 0 else None
    share = run.late_rate_limited / run.late_calls if run.late_calls else 0.0
    out.notes.append(
        f"- {name}, configured {2 * r}/min, server {r}/min ({what}): "
        f"{run.ok:,} answers and {run.rate_limited:,} 429s (at {run.when_rate_limited()}) of "
        f"{run.calls:,} calls in {run.seconds:.1f} s; after the first {warmup:.0f} s: "
        f"{run.late_ok:,} answers, {run.late_rate_limited:,} 429s of {run.late_calls:,} calls "
        f"in {run.late_seconds:.1f} s; batchgen exit {run.child.returncode}"
    )
    out.add(name, f"at 2R: achieved ÷ R after {warmup:.0f} s", late, "{:.3f}", "≥ 0.95",
            lambda v: v >= 0.95)  # fmt: skip
    out.add(name, f"at 2R: 429 share after {warmup:.0f} s", share, "{:.2%}", "≤ 1%",
            lambda v: v <= 0.01)  # fmt: skip


STORM_RPM = 600
STORM_ROWS = 600
STORM_AFTER_S = 30.0
STORM_SECONDS = 120.0
# The breaker's threshold (10), the calls in flight at this pace (10/s x ~1.7 s x 1.2 = 20)
# and its probes in two minutes (after 5, 15, 35, 75 and 135 s: 5) come to 35.
STORM_CALLS_TARGET = 40


def storm(ctx: Context, out: Outcome) -> None:
    """503 for every call for two minutes, 30 s into a run; the run goes on to its end."""
    quick = ctx.sizes.rate_seconds < 60
    after, length = (5.0, 20.0) if quick else (STORM_AFTER_S, STORM_SECONDS)
    rows = STORM_ROWS // 4 if quick else STORM_ROWS
    folder = ctx.folder("storm")
    job = write_job(folder, ctx.input(rows), rpm=STORM_RPM, concurrency=None)
    config = {"latency_median_ms": 1000.0, "latency_sigma": SIGMA}
    with EmulatorProcess(outage_after_s=after, outage_seconds=length, **config) as emulator:
        ctx.log(f"  storm: {rows} rows at {STORM_RPM}/min, 503s from {after:g} s for {length:g} s")
        with Poller(emulator) as poller:
            child = run_child(batchgen_cmd(job, emulator.base_url), cwd=folder, env=child_env(),
                              timeout=length + 600)  # fmt: skip
        last = poller.timeline.samples[-1]
        first = poller.timeline.samples[0]
    storm_calls = last.since(first, "fault:outage")
    answered = last.since(first, "status:200")
    out.notes.append(
        f"- storm, {rows} rows at {STORM_RPM}/min, 503 for {length:g} s from {after:g} s after "
        f"the first call: {storm_calls:,} calls during the storm, "
        f"{last.since(first, 'generateContent'):,} calls in all, {answered:,} rows answered; "
        f"batchgen exit {child.returncode} after {child.wall:.0f} s: "
        f"{(child.stdout.strip() or child.stderr.strip()).splitlines()[-1:]}"
    )
    out.add("storm", "calls during the storm", storm_calls, "{:.0f}", f"≤ {STORM_CALLS_TARGET}",
            lambda v: v <= STORM_CALLS_TARGET)  # fmt: skip
    out.add("storm", f"rows answered of {rows}", answered, "{:.0f}", f"{rows}",
            lambda v: v == rows)  # fmt: skip
    out.add("storm", "batchgen exit code", child.returncode, "{:.0f}", "0", lambda v: v == 0)
