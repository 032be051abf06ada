"""The paced scenarios: rate accuracy and the token limit.

The emulator enforces a per-minute limit in a sliding 60 s window; batchgen runs with its own limit
set for a fixed window from its first request and is then stopped with SIGTERM (its clean
shutdown: exit 4, everything done is saved). Answers and 429s are counted over the window, and
after a warm-up (the first minute).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from harness import (
    ChildResult,
    EmulatorProcess,
    Poller,
    batchgen_cmd,
    child_env,
    prompt_of_row,
    run_child,
    write_job,
)
from scenarios import CONCURRENCY, Context, Outcome

from batchgen.emulator import estimate_tokens

RATE_RPM = 1200  # R: 20 requests/s, light on CPU so that the limiter alone is measured


@dataclass
class Paced:
    """A run stopped after a fixed window, with its figures over the window and after warm-up."""

    ok: int
    calls: int
    rate_limited: int
    seconds: float
    late_ok: int  # after the warm-up
    late_calls: int
    late_rate_limited: int
    late_seconds: float
    child: ChildResult
    rate_limited_at: list[float]  # when 429s were seen (s from the first request), per sample

    def when_rate_limited(self) -> str:
        if not self.rate_limited_at:
            return "none"
        return f"{self.rate_limited_at[0]:.1f}–{self.rate_limited_at[-1]:.1f} s"


def run_paced(
    ctx: Context,
    emulator: EmulatorProcess,
    name: str,
    rows: int,
    seconds: float,
    warmup: float,
    **job: int,
) -> Paced:
    """batchgen for ``seconds`` from its first request, then SIGTERM; counts over the window."""
    folder = ctx.folder(name)
    job_path = write_job(folder, ctx.input(rows), **job)
    cmd = batchgen_cmd(job_path, emulator.base_url) + ["--grace", "5"]
    with Poller(emulator) as poller:
        base = poller.latest().counts.get("generateContent", 0)
        started: list[float] = []

        def due() -> bool:
            sample = poller.latest()
            if not started and sample.counts.get("generateContent", 0) > base:
                started.append(sample.at)
            return bool(started) and sample.at - started[0] >= seconds

        child = run_child(cmd, cwd=folder, env=child_env(), timeout=seconds + 120, stop_when=due)
    if not started:
        raise RuntimeError(f"batchgen sent nothing: {child.stderr.strip()[-600:]}")
    tl = poller.timeline
    t0 = started[0]
    first, mid, end = tl.at(t0 - 1e-9), tl.at(t0 + warmup), tl.at(t0 + seconds)
    window = [s for s in tl.samples if first.at <= s.at <= end.at]
    limited = [
        b.at - first.at for a, b in itertools.pairwise(window) if b.since(a, "status:429") > 0
    ]
    return Paced(
        ok=end.since(first, "status:200"),
        calls=end.since(first, "generateContent"),
        rate_limited=end.since(first, "status:429"),
        seconds=end.at - first.at,
        late_ok=end.since(mid, "status:200"),
        late_calls=end.since(mid, "generateContent"),
        late_rate_limited=end.since(mid, "status:429"),
        late_seconds=end.at - mid.at,
        child=child,
        rate_limited_at=limited,
    )


def _share(part: int, whole: int) -> float:
    return part / whole if whole else 0.0


def rate(ctx: Context, out: Outcome) -> None:
    """The emulator allows R requests/min; batchgen set to R, then to 2R."""
    r, sizes = RATE_RPM, ctx.sizes
    for factor, seconds in ((1, sizes.rate_seconds), (2, sizes.rate2_seconds)):
        configured = r * factor
        rows = int(configured / 60 * seconds * 1.5) + configured  # never runs out in the window
        with EmulatorProcess(rpm=r) as emulator:
            ctx.log(f"  rate: batchgen at {configured}/min against {r}/min, {seconds:.0f} s")
            run = run_paced(
                ctx,
                emulator,
                f"rate-{factor}",
                rows,
                seconds,
                sizes.warmup_seconds,
                rpm=configured,
                concurrency=CONCURRENCY,
            )
        achieved = run.ok / run.seconds * 60 / r
        late = run.late_ok / run.late_seconds * 60 / r if run.late_seconds > 0 else None
        share = _share(run.rate_limited, run.calls)
        out.notes.append(
            f"- rate, configured {configured}/min, emulator {r}/min: {run.ok:,} answers and "
            f"{run.rate_limited:,} 429s (at {run.when_rate_limited()}) of {run.calls:,} calls in "
            f"{run.seconds:.1f} s; after the "
            f"first {sizes.warmup_seconds:.0f} s: {run.late_ok:,} answers, "
            f"{run.late_rate_limited:,} 429s in {run.late_seconds:.1f} s; "
            f"batchgen exit {run.child.returncode}"
        )
        window = f"{run.seconds:.0f} s"
        if factor == 1:
            out.add(
                "rate",
                f"at R: achieved ÷ R ({window})",
                achieved,
                "{:.3f}",
                "≥ 0.97",
                lambda v: v >= 0.97,
            )
            out.add("rate", "at R: 429 share", share, "{:.2%}", "< 0.5%", lambda v: v < 0.005)
        else:
            out.add("rate", f"at 2R: achieved ÷ R ({window})", achieved, "{:.3f}")
            out.add("rate", "at 2R: 429 share", share, "{:.2%}", "< 5%", lambda v: v < 0.05)
            out.add(
                "rate",
                f"at 2R: achieved ÷ R after {sizes.warmup_seconds:.0f} s",
                late,
                "{:.3f}",
                "≥ 0.9",
                lambda v: v >= 0.9,
            )
            late_share = _share(run.late_rate_limited, run.late_calls)
            out.add(
                "rate", f"at 2R: 429 share after {sizes.warmup_seconds:.0f} s", late_share, "{:.2%}"
            )


def tokens(ctx: Context, out: Outcome) -> None:
    """The emulator allows T input tokens/min; batchgen set to T (tokens_per_minute)."""
    per_prompt = {estimate_tokens(prompt_of_row(i)) for i in range(64)}
    if len(per_prompt) != 1:
        raise RuntimeError(f"prompts differ in tokens: {sorted(per_prompt)}")
    tpp = per_prompt.pop()
    limit = RATE_RPM * tpp  # the same pace as the rate scenario, in tokens
    seconds = ctx.sizes.rate_seconds
    rows = int(RATE_RPM / 60 * seconds * 1.5) + RATE_RPM
    with EmulatorProcess(tpm=limit) as emulator:
        ctx.log(f"  tokens: batchgen at {limit:,} tokens/min ({tpp} a prompt), {seconds:.0f} s")
        run = run_paced(
            ctx,
            emulator,
            "tokens",
            rows,
            seconds,
            ctx.sizes.warmup_seconds,
            tpm=limit,
            concurrency=CONCURRENCY,
        )
    achieved = run.ok * tpp / run.seconds * 60
    out.notes.append(
        f"- tokens, T = {limit:,}/min ({tpp} tokens a prompt): {run.ok:,} answers "
        f"({run.ok * tpp:,} tokens) and {run.rate_limited:,} 429s (at {run.when_rate_limited()}) "
        f"of {run.calls:,} calls in {run.seconds:.1f} s; batchgen exit {run.child.returncode}"
    )
    ratio = achieved / limit
    out.add("tokens", f"achieved tokens/min ÷ T ({run.seconds:.0f} s)", ratio, "{:.3f}", "(≥ 0.97)")
    out.add("tokens", "429 share", _share(run.rate_limited, run.calls), "{:.2%}", "(< 0.5%)")
