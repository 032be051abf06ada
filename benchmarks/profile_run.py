"""Profile a zero-latency ``batchgen run``: where does batchgen's own CPU per row go?

``python benchmarks/profile_run.py [--rows 20000] [--concurrency 64] [--tool py-spy|pyinstrument]``

Starts the emulator in its own process, writes the benchmark's input and job, and runs
``python -m batchgen run`` under a sampling profiler:

- py-spy (default; ``pip install py-spy``) samples every thread of the batchgen process, so the
  reader's and writer's threads count too. It stops the process for each sample (whole stacks,
  a slower run; the shares of CPU hold). The report, in Markdown, gives the top frames by self
  time, the event loop's time by callback, and the steps inside one attempt at a row.
- pyinstrument (the ``bench`` extra) samples the main thread only, where the event loop runs;
  its call tree is printed as it renders it.
"""

from __future__ import annotations

import argparse
import collections
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from harness import EmulatorProcess, batchgen_cmd, child_env, write_input, write_job
from scenarios import insights_job, reviews_input

# Samples whose innermost frame is a thread pool's idle loop are waiting for work, not working
# (py-spy counts their wake-ups as activity).
IDLE_LEAVES = ("_worker (concurrent/futures/thread.py)",)
# Where the breakdowns start: the event loop's callbacks, and one attempt at one row.
LOOP_CALLBACK = "Handle._run (asyncio/events.py)"
ATTEMPT = "RowCaller._attempt (batchgen/backends/online/caller.py)"
POOL_JOB = "_WorkItem.run (concurrent/futures/thread.py)"
_LOCATION = re.compile(r" \(([^()]*?):\d+\)$")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--tool", choices=("py-spy", "pyinstrument"), default="py-spy")
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--top", type=int, default=10)
    parser.add_argument(
        "--job",
        choices=("bench", "insights"),
        default="bench",
        help="the benchmark's flat job, or jobs/review_insights.toml (nested) over its reviews",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="batchgen-profile-"))
    try:
        if args.job == "insights":
            job = insights_job(folder, reviews_input(folder, args.rows), args.concurrency)
        else:
            job = write_job(
                folder, write_input(folder / "in.csv", args.rows), concurrency=args.concurrency
            )
        with EmulatorProcess() as emulator:
            run = batchgen_cmd(job, emulator.base_url)
            if args.tool == "pyinstrument":
                out = folder / "profile.txt"
                cmd = [sys.executable, "-m", "pyinstrument", "-o", str(out), *run[1:]]
                _run(cmd, folder)
                print(out.read_text())
                return 0
            raw = folder / "raw.txt"
            spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
            cmd = [spy, "record", "--threads", "--format", "raw"]
            cmd += ["-r", str(args.rate), "-o", str(raw), "--", *run]
            _run(cmd, folder)
        print(report(raw.read_text(), args.top, args.rows, args.concurrency))
    finally:
        if args.keep:
            print(f"kept {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)
    return 0


def _run(cmd: list[str], cwd: Path) -> None:
    done = subprocess.run(cmd, cwd=cwd, env=child_env(), capture_output=True, text=True)
    summary = [line for line in done.stdout.splitlines() if "rows done" in line]
    print(summary[0] if summary else done.stdout[-400:], file=sys.stderr)
    if done.returncode != 0:
        raise SystemExit(f"{cmd[0]} exited {done.returncode}: {done.stderr[-800:]}")


def _frame(text: str) -> str:
    """``name (path/file.py:123)`` → ``name (path/file.py)``: lines merged per function."""
    return _LOCATION.sub(lambda m: f" ({m.group(1)})", text)


def report(raw: str, top: int, rows: int, concurrency: int) -> str:
    """Markdown: the top frames by self time, then breakdowns by loop callback and in an attempt.

    Every share is of all samples of batchgen at work (every thread, idle pool threads left out).
    """
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    callbacks: collections.Counter[str] = collections.Counter()
    attempt: collections.Counter[str] = collections.Counter()
    total = idle = 0
    for line in raw.splitlines():
        stack, _, text = line.rpartition(" ")
        if not stack:
            continue
        _thread, *frames = stack.split(";")
        frames = [_frame(f) for f in frames] or ["(no Python frame)"]
        count = int(text)
        if frames[-1] in IDLE_LEAVES:
            idle += count
            continue
        total += count
        own[frames[-1]] += count
        for f in set(frames):
            inclusive[f] += count
        callbacks[_callback(frames)] += count
        if ATTEMPT in frames:
            attempt[_below(frames, ATTEMPT, "", "(its own code)")] += count
    if not total:
        return "no samples"
    head = (
        f"{rows:,} rows, concurrency {concurrency}, zero latency: {total:,} samples of batchgen "
        f"at work, every thread ({idle:,} of idle pool threads left out)."
    )
    return "\n\n".join(
        [
            head,
            f"Top {top} frames by self time:\n\n" + _table(own.most_common(top), total, "self"),
            "The time by event-loop callback (the task or transport it runs), by thread-pool job, "
            "and outside the loop:\n\n" + _table(callbacks.most_common(12), total, "inclusive"),
            f"Inside one attempt (`{ATTEMPT}`, {inclusive[ATTEMPT] / total:.0%} in all):\n\n"
            + _table(attempt.most_common(12), total, "inclusive"),
        ]
    )


def _callback(frames: list[str]) -> str:
    """What a sample was doing: an event-loop callback, a thread-pool job, or neither."""
    if LOOP_CALLBACK in frames:
        return _below(frames, LOOP_CALLBACK, "", "(the loop itself)")
    if POOL_JOB in frames:
        job = _below(frames, POOL_JOB, "", "(the pool itself)")
        return f"thread pool: {job}"
    return "(outside the event loop: start-up, end)"


def _below(frames: list[str], parent: str, absent: str, leaf: str) -> str:
    """The frame that the innermost ``parent`` calls in a stack (``leaf``: none, it runs)."""
    for i in range(len(frames) - 1, -1, -1):
        if frames[i] == parent:
            return frames[i + 1] if i + 1 < len(frames) else leaf
    return absent


def _table(rows: list[tuple[str, int]], total: int, label: str) -> str:
    lines = [f"| # | frame | {label} |", "|---|---|---|"]
    lines += [f"| {i} | `{name}` | {n / total:.1%} |" for i, (name, n) in enumerate(rows, 1)]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
