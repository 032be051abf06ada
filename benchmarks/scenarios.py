"""The throughput scenarios (overhead, peer, latency, memory) and what every scenario shares.

Each scenario starts its own emulator, runs its contenders and adds its metrics to an Outcome.

Throughput is measured on the emulator's side, the same way for every contender: rows answered
÷ the time from its first request to its last answer (the emulator's counts, sampled every
50 ms). That leaves out interpreter start-up and input scanning, which the end-to-end wall time
(also recorded) includes.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from harness import (
    ChildResult,
    EmulatorProcess,
    Poller,
    Sample,
    Timeline,
    batchgen_cmd,
    child_env,
    run_child,
    write_input,
    write_job,
)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CONCURRENCY = 64

LATENCY_MS = 500
LATENCY_CONCURRENCY = 256


@dataclass(frozen=True)
class Sizes:
    """How big each scenario is: the default run, or --quick."""

    overhead_rows: int
    repeats: int  # rounds of overhead and peer
    peer_rows: int
    latency_waves: int
    rate_seconds: float  # the measured window at R (and for the token limit)
    rate2_seconds: float  # the measured window at 2R
    warmup_seconds: float  # "after the first minute"
    memory_rows: tuple[int, int]


FULL = Sizes(30_000, 2, 10_000, 30, 75.0, 135.0, 60.0, (100_000, 1_000_000))
QUICK = Sizes(5_000, 1, 2_000, 6, 10.0, 12.0, 5.0, (10_000, 30_000))


@dataclass
class Metric:
    scenario: str
    name: str
    value: float | None
    text: str  # the value as shown
    target: str = ""
    met: bool | None = None  # None: no target, or not measured


@dataclass
class Outcome:
    metrics: list[Metric] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # lines for RESULTS.md
    judge: bool = True  # False (--quick): targets shown in parentheses, not checked

    def add(
        self,
        scenario: str,
        name: str,
        value: float | None,
        fmt: str = "{:.0f}",
        target: str = "",
        check: Callable[[float], bool] | None = None,
    ) -> None:
        text = "n/a" if value is None else fmt.format(value)
        met = None if value is None or check is None or not self.judge else check(value)
        if target and not self.judge and not target.startswith("("):
            target = f"({target})"  # shown, not checked
        self.metrics.append(Metric(scenario, name, value, text, target, met))


@dataclass
class Context:
    workdir: Path
    sizes: Sizes
    log: Callable[[str], None]
    inputs: dict[int, Path] = field(default_factory=dict)

    def input(self, rows: int) -> Path:
        if rows not in self.inputs:
            self.log(f"  writing an input of {rows:,} rows")
            self.inputs[rows] = write_input(self.workdir / "inputs" / f"{rows}.csv", rows)
        return self.inputs[rows]

    def folder(self, name: str) -> Path:
        path = self.workdir / name
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        return path


@dataclass
class Run:
    """One contender's run against the emulator: the child's figures and the emulator's."""

    child: ChildResult
    rows: int  # rows answered (HTTP 200) during the run
    seconds: float  # first request to last answer, seen from the emulator
    emulator_cpu: float  # the emulator's CPU seconds over that time
    client_cpu: float  # the contender's CPU seconds over that time
    calls: int
    rate_limited: int
    rss: dict[str, float]  # the contender's RSS (MB, sampled) at points of the run

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0

    @property
    def cpu_per_row(self) -> float:
        """The contender's CPU µs per row, from its first request to its last answer."""
        return self.client_cpu / self.rows * 1e6 if self.rows else 0.0

    @property
    def emulator_load(self) -> float:
        return self.emulator_cpu / self.seconds if self.seconds > 0 else 0.0


def _window(timeline: Timeline) -> tuple[Sample, Sample] | None:
    """The samples just before the first request and at the last answer of a run."""
    first, last = timeline.samples[0], timeline.samples[-1]
    calls0 = first.counts.get("generateContent", 0)
    ok_end = last.counts.get("status:200", 0)
    start = next(
        (i for i, s in enumerate(timeline.samples) if s.counts.get("generateContent", 0) > calls0),
        None,
    )
    end = next((s for s in timeline.samples if s.counts.get("status:200", 0) >= ok_end), None)
    if start is None or end is None:
        return None
    # The first sample that shows a request was taken up to one poll after it arrived; the one
    # before it, up to one poll before: the window is right within one poll (50 ms).
    return timeline.samples[max(0, start - 1)], end


def measure(
    emulator: EmulatorProcess,
    cmd: list[str],
    cwd: Path,
    timeout: float,
    env: dict[str, str] | None = None,
) -> Run:
    env = child_env() if env is None else env
    with Poller(emulator) as poller:
        child = run_child(cmd, cwd=cwd, env=env, timeout=timeout, on_start=poller.watch)
    window = _window(poller.timeline)
    if child.returncode != 0 or window is None:
        raise RuntimeError(
            f"{cmd[1:3]} exited {child.returncode}: {child.stderr.strip()[-600:]}"
            f"\n{child.stdout.strip()[-300:]}"
        )
    start, end = window
    samples = poller.timeline.samples
    first, last = samples[0], samples[-1]
    return Run(
        child=child,
        rows=last.since(first, "status:200"),
        seconds=end.at - start.at,
        emulator_cpu=end.emulator_cpu - start.emulator_cpu,
        client_cpu=end.client_cpu - start.client_cpu,
        calls=last.since(first, "generateContent"),
        rate_limited=last.since(first, "status:429"),
        rss=_rss_points(samples, start, end),
    )


def _rss_points(samples: list[Sample], start: Sample, end: Sample) -> dict[str, float]:
    """The most RSS sampled before the first call, until a quarter, half and all of the calls
    were answered, and after the last answer."""
    span = end.at - start.at
    points = {"before the first call": max(s.client_rss for s in samples if s.at < start.at)}
    points |= {
        f"{share:.0%} of the calls": max(
            (s.client_rss for s in samples if s.at <= start.at + share * span), default=0.0
        )
        for share in (0.25, 0.5, 1.0)
    }
    points["after the last answer"] = max(
        (s.client_rss for s in samples if s.at > end.at), default=0.0
    )
    return points


def run_batchgen(
    ctx: Context, emulator: EmulatorProcess, name: str, rows: int, timeout: float = 900, **job: int
) -> Run:
    folder = ctx.folder(name)
    job_path = write_job(folder, ctx.input(rows), **job)
    return measure(emulator, batchgen_cmd(job_path, emulator.base_url), folder, timeout)


def run_contender(
    ctx: Context, emulator: EmulatorProcess, kind: str, rows: int, timeout: float = 600
) -> Run:
    folder = ctx.folder(f"{kind}-{rows}")
    cmd = [sys.executable, str(HERE / "contenders.py"), kind, emulator.base_url]
    cmd += [str(ctx.input(rows)), str(CONCURRENCY)]
    if kind == "peer":
        cmd.append(str(folder / "answers.parquet"))
    return measure(emulator, cmd, folder, timeout)


def _describe(label: str, run: Run) -> str:
    c = run.child
    return (
        f"{label}: {run.rows:,} rows in {run.seconds:.2f} s = {run.rows_per_second:,.0f} rows/s "
        f"(end to end {c.wall:.2f} s); its CPU {run.client_cpu:.2f} s = "
        f"{run.cpu_per_row:.0f} µs/row ({c.cpu_seconds:.2f} s in all); peak RSS "
        f"{c.peak_rss_mb:.0f} MB; emulator load {run.emulator_load:.0%} of a core"
    )


# --- overhead -------------------------------------------------------------------------------


def overhead(ctx: Context, out: Outcome) -> None:
    """batchgen against a bare aiohttp loop: same concurrency, body and emulator (no latency)."""
    rows = ctx.sizes.overhead_rows
    best: dict[str, Run] = {}
    with EmulatorProcess() as emulator:
        for i in range(ctx.sizes.repeats):
            for kind in ("bare", "batchgen"):
                ctx.log(f"  overhead: {kind}, {rows:,} rows (round {i + 1})")
                if kind == "bare":
                    run = run_contender(ctx, emulator, "bare", rows)
                else:
                    run = run_batchgen(
                        ctx, emulator, f"overhead-{i}", rows, concurrency=CONCURRENCY
                    )
                out.notes.append(f"- overhead, round {i + 1}, {_describe(kind, run)}")
                if kind not in best or run.rows_per_second > best[kind].rows_per_second:
                    best[kind] = run
    bg, bare = best["batchgen"].rows_per_second, best["bare"].rows_per_second
    out.add("overhead", "batchgen rows/s (best round)", bg)
    out.add("overhead", "bare aiohttp loop rows/s (best round)", bare)
    out.add("overhead", "batchgen ÷ bare", bg / bare, "{:.2f}", "≥ 0.6", lambda v: v >= 0.6)
    cpu = {k: r.cpu_per_row for k, r in best.items()}
    out.add("overhead", "client CPU per row: batchgen µs", cpu["batchgen"])
    out.add("overhead", "client CPU per row: bare loop µs", cpu["bare"])


# --- peer -------------------------------------------------------------------------------------


def peer(ctx: Context, out: Outcome) -> None:
    """batchgen against google-genai + asyncio.Semaphore + pandas + pyarrow, same rows."""
    rows = ctx.sizes.peer_rows
    best: dict[str, Run] = {}
    with EmulatorProcess() as emulator:
        for i in range(ctx.sizes.repeats):
            for kind in ("google-genai", "batchgen"):
                ctx.log(f"  peer: {kind}, {rows:,} rows (round {i + 1})")
                if kind == "batchgen":
                    run = run_batchgen(ctx, emulator, f"peer-{i}", rows, concurrency=CONCURRENCY)
                else:
                    run = run_contender(ctx, emulator, "peer", rows)
                out.notes.append(f"- peer, round {i + 1}, {_describe(kind, run)}")
                if kind not in best or run.rows_per_second > best[kind].rows_per_second:
                    best[kind] = run
    sdk, bg = best["google-genai"], best["batchgen"]
    ratio = bg.rows_per_second / sdk.rows_per_second
    out.add("peer", "google-genai SDK rows/s (best round)", sdk.rows_per_second)
    out.add("peer", "batchgen rows/s (best round)", bg.rows_per_second)
    out.add("peer", "batchgen ÷ google-genai", ratio, "{:.1f}×", "≥ 5×", lambda v: v >= 5)
    wall = sdk.child.wall / bg.child.wall
    out.add("peer", "same, end to end (process wall time)", wall, "{:.1f}×")
    out.add("peer", "client CPU per row: google-genai µs", sdk.cpu_per_row)
    out.add("peer", "peak RSS google-genai MB", sdk.child.peak_rss_mb)
    out.add("peer", "peak RSS batchgen MB", bg.child.peak_rss_mb)


# --- insights: the nested job ---------------------------------------------------------------


def insights(ctx: Context, out: Outcome) -> None:
    """jobs/review_insights.toml (nested arrays of objects, a system instruction, carried
    columns) at zero latency: batchgen's CPU a row, and batchgen against the google-genai peer.

    The bare aiohttp loop of the overhead scenario runs beside them as this machine's gauge:
    the issue's target of 400 µs a row was set where that loop took 152 µs (RESULTS.md of
    2026-11-24), so the target here is 400 / 152 = 2.63 times what the loop takes today.
    """
    rows = ctx.sizes.peer_rows
    source = reviews_input(ctx.workdir / "inputs", rows)
    best: dict[str, Run] = {}
    with EmulatorProcess() as emulator:
        for i in range(ctx.sizes.repeats):
            for kind in ("bare", "google-genai", "batchgen"):
                ctx.log(f"  insights: {kind}, {rows:,} rows (round {i + 1})")
                folder = ctx.folder(f"insights-{kind}-{i}")
                if kind == "bare":
                    run = run_contender(ctx, emulator, "bare", rows)
                elif kind == "batchgen":
                    job = insights_job(folder, source)
                    run = measure(emulator, batchgen_cmd(job, emulator.base_url), folder, 900)
                else:
                    cmd = [sys.executable, str(HERE / "contenders.py"), "peer-insights"]
                    cmd += [emulator.base_url, str(source), str(CONCURRENCY)]
                    cmd.append(str(folder / "answers.parquet"))
                    run = measure(emulator, cmd, folder, 900)
                out.notes.append(f"- insights, round {i + 1}, {_describe(kind, run)}")
                if kind not in best or run.cpu_per_row < best[kind].cpu_per_row:
                    best[kind] = run
    sdk, bg, bare = best["google-genai"], best["batchgen"], best["bare"]
    out.add("insights", "client CPU per row: batchgen µs (best round)", bg.cpu_per_row)
    out.add("insights", "client CPU per row: google-genai µs (best round)", sdk.cpu_per_row)
    out.add("insights", "client CPU per row: bare loop µs (the gauge)", bare.cpu_per_row)
    gauge = bg.cpu_per_row / bare.cpu_per_row
    out.add(
        "insights", "batchgen CPU ÷ bare loop CPU", gauge, "{:.2f}", "≤ 2.63",
        lambda v: v <= 400 / 152,
    )  # fmt: skip
    out.add(
        "insights", "batchgen CPU at the issue's gauge (× 152 µs)", gauge * 152, "{:.0f}",
        "≤ 400", lambda v: v <= 400,
    )  # fmt: skip
    ratio = sdk.cpu_per_row / bg.cpu_per_row
    out.add(
        "insights", "google-genai CPU ÷ batchgen CPU", ratio, "{:.1f}×", "≥ 6×", lambda v: v >= 6
    )
    out.add("insights", "batchgen rows/s (best round)", bg.rows_per_second)
    out.add("insights", "google-genai rows/s (best round)", sdk.rows_per_second)
    out.add(
        "insights", "batchgen ÷ google-genai rows/s", bg.rows_per_second / sdk.rows_per_second,
        "{:.1f}×",
    )  # fmt: skip


def reviews_input(folder: Path, rows: int) -> Path:
    """sample_inputs/product_reviews.parquet repeated to ``rows`` rows with fresh ids."""
    path = folder / f"reviews-{rows}.parquet"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        table = pq.read_table(ROOT / "sample_inputs" / "product_reviews.parquet")
        big = pa.concat_tables([table] * -(-rows // table.num_rows)).slice(0, rows)
        ids = pa.array([f"r{i:08d}" for i in range(rows)])
        big = big.set_column(big.schema.get_field_index("review_id"), "review_id", ids)
        pq.write_table(big, path)
    return path


def insights_job(folder: Path, source: Path, concurrency: int | str = CONCURRENCY) -> Path:
    """jobs/review_insights.toml as shipped, pointed at ``source`` with the quota out of the
    way and concurrency pinned at the peer's."""
    shutil.copy(ROOT / "jobs" / "review_insights.schema.json", folder)
    text = (ROOT / "jobs" / "review_insights.toml").read_text(encoding="utf-8")
    text = text.replace('"../sample_inputs/product_reviews.parquet"', json.dumps(str(source)))
    text = text.replace('"../out/review_insights"', json.dumps(str(folder / "out")))
    text = text.replace("requests_per_minute = 1000", "requests_per_minute = 1000000000")
    text = text.replace("concurrency = 32", f"concurrency = {json.dumps(concurrency)}")
    job = folder / "review_insights.toml"
    job.write_text(text, encoding="utf-8")
    return job


# --- latency hiding -----------------------------------------------------------------------


def latency(ctx: Context, out: Outcome) -> None:
    """500 ms per answer, 256 calls in flight: how close to 256 / 0.5 s."""
    rows = LATENCY_CONCURRENCY * ctx.sizes.latency_waves
    ideal = LATENCY_CONCURRENCY / (LATENCY_MS / 1000)
    with EmulatorProcess(latency_ms=LATENCY_MS) as emulator:
        ctx.log(f"  latency: batchgen, {rows:,} rows at {LATENCY_MS} ms, {LATENCY_CONCURRENCY}")
        run = run_batchgen(ctx, emulator, "latency", rows, concurrency=LATENCY_CONCURRENCY)
    out.notes.append(f"- latency hiding, {_describe('batchgen', run)}")
    out.add("latency", f"batchgen rows/s (ideal {ideal:.0f})", run.rows_per_second)
    share = run.rows_per_second / ideal
    out.add("latency", "rows/s ÷ (256 / 0.5 s)", share, "{:.2f}", "≥ 0.9", lambda v: v >= 0.9)


# --- memory ---------------------------------------------------------------------------------


def memory(ctx: Context, out: Outcome) -> None:
    """Peak RSS of `batchgen run` over a small and a large CSV, zero latency."""
    small, large = ctx.sizes.memory_rows
    peaks: dict[int, float] = {}
    with EmulatorProcess() as emulator:
        for rows in (small, large):
            ctx.log(f"  memory: batchgen, {rows:,} rows")
            run = run_batchgen(
                ctx, emulator, f"memory-{rows}", rows, timeout=1200, concurrency=CONCURRENCY
            )
            if run.rows != rows:
                raise RuntimeError(f"memory: {run.rows} of {rows} rows answered")
            peaks[rows] = run.child.peak_rss_mb
            out.notes.append(f"- memory, {rows:,} rows, {_describe('batchgen', run)}")
            points = ", ".join(f"{k} {v:.0f} MB" for k, v in run.rss.items())
            out.notes.append(f"  - RSS sampled every 50 ms, the most until: {points}")
            shutil.rmtree(ctx.workdir / f"memory-{rows}", ignore_errors=True)
    big = large >= 1_000_000
    out.add("memory", f"peak RSS at {small:,} rows MB", peaks[small])
    out.add(
        "memory",
        f"peak RSS at {large:,} rows MB",
        peaks[large],
        "{:.0f}",
        "≤ 400" if big else "",
        (lambda v: v <= 400) if big else None,
    )
    out.add(
        "memory",
        f"RSS({large:,}) ÷ RSS({small:,})",
        peaks[large] / peaks[small],
        "{:.2f}",
        "≤ 1.3",
        lambda v: v <= 1.3,
    )
