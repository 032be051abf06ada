"""This tree against another commit, on the same emulator, rounds alternating.

    python benchmarks/compare.py [--baseline REF] [--job insights|bench] [--rows N] [--rounds R]

A change to the hot path is judged here: both trees run the same job over the same input
against one emulator process, in turns (this tree, then the baseline, R times), so a machine
that slows down mid-session slows both. Reported per tree: client CPU per row and rows/s over
the window from the first request to the last answer (as in run.py's scenarios), the least CPU
and the most rows/s of the rounds, and this tree's ratios. The baseline is checked out in a
temporary git worktree and run with PYTHONPATH pointing at it.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from harness import EmulatorProcess, batchgen_cmd, child_env, write_input, write_job
from scenarios import CONCURRENCY, Run, insights_job, measure, reviews_input

ROOT = Path(__file__).resolve().parent.parent


def _concurrency(text: str) -> int | str:
    return text if text == "auto" else int(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default="HEAD~1")
    parser.add_argument("--job", choices=("insights", "bench"), default="insights")
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--concurrency",
        type=_concurrency,
        default=CONCURRENCY,
        help='a number, or "auto": the default a user gets',
    )
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="batchgen-compare-"))
    base = folder / "baseline"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(base),
                    args.baseline], check=True, capture_output=True)  # fmt: skip
    try:
        if args.job == "insights":
            source = reviews_input(folder, args.rows)
        else:
            source = write_input(folder / "input.csv", args.rows)
        runs: dict[str, list[Run]] = {"this tree": [], args.baseline: []}
        with EmulatorProcess() as emulator:
            for r in range(args.rounds):
                for name, tree in (("this tree", ROOT), (args.baseline, base)):
                    work = folder / f"{name.replace(' ', '_')}-{r}"
                    work.mkdir()
                    if args.job == "insights":
                        job = insights_job(work, source, args.concurrency)
                    else:
                        pinned = None if args.concurrency == "auto" else int(args.concurrency)
                        job = write_job(work, source, concurrency=pinned)
                    env = child_env() | {"PYTHONPATH": str(tree)}
                    run = measure(emulator, batchgen_cmd(job, emulator.base_url), work, 900, env)
                    runs[name].append(run)
                    print(f"round {r + 1}, {name}: {run.cpu_per_row:.0f} µs a row, "
                          f"{run.rows_per_second:.0f} rows/s", flush=True)  # fmt: skip
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base)],
                       capture_output=True)  # fmt: skip
        shutil.rmtree(folder, ignore_errors=True)
    mine, theirs = runs["this tree"], runs[args.baseline]
    cpu = min(r.cpu_per_row for r in mine), min(r.cpu_per_row for r in theirs)
    rate = max(r.rows_per_second for r in mine), max(r.rows_per_second for r in theirs)
    print(f"{args.job}, {args.rows:,} rows, concurrency {args.concurrency}, best of "
          f"{args.rounds}: CPU a row {cpu[0]:.0f} µs against {cpu[1]:.0f} µs at {args.baseline} "
          f"(ratio {cpu[0] / cpu[1]:.3f}); {rate[0]:.0f} rows/s against {rate[1]:.0f} "
          f"(ratio {rate[0] / rate[1]:.3f})")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
