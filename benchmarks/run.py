"""Benchmark batchgen against the emulator: ``python benchmarks/run.py [--quick] [--only ...]``.

Runs the scenarios (see benchmarks/README.md), prints a table and, for a full run of every
scenario, writes benchmarks/RESULTS.md with the machine it ran on. Each scenario starts its own
emulator process on 127.0.0.1; every process started is stopped by its pid, and the temporary
folder is removed unless ``--keep``.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

from paced import rate, tokens
from quota import storm, strict, strict_standin, sweep
from scenarios import (
    FULL,
    QUICK,
    Context,
    Metric,
    Outcome,
    insights,
    latency,
    memory,
    overhead,
    peer,
)

HERE = Path(__file__).resolve().parent
SCENARIOS: dict[str, Callable[[Context, Outcome], None]] = {
    "overhead": overhead,
    "peer": peer,
    "insights": insights,
    "latency": latency,
    "rate": rate,
    "tokens": tokens,
    "memory": memory,
    "sweep": sweep,
    "strict": strict,
    "strict-standin": strict_standin,
    "storm": storm,
}

PACKAGES = (
    "batchgen", "aiohttp", "aiolimiter", "pyarrow", "pandas", "jsonschema", "fastjsonschema",
    "tenacity", "google-genai", "psutil",
)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = _parse(argv)
    names = _pick(args)
    sizes = QUICK if args.quick else FULL
    workdir = Path(tempfile.mkdtemp(prefix="batchgen-bench-"))
    ctx = Context(workdir, sizes, log=lambda line: print(line, flush=True))
    outcome = Outcome(judge=not args.quick)
    failed: list[str] = []
    checkout = _commit()
    started = time.monotonic()
    try:
        for name in names:
            print(f"{name} …", flush=True)
            t0 = time.monotonic()
            try:
                SCENARIOS[name](ctx, outcome)
            except Exception as exc:  # one broken scenario should not hide the others
                failed.append(name)
                outcome.notes.append(f"- {name}: FAILED: {exc}")
                print(f"  FAILED: {exc}", flush=True)
            print(f"  ({time.monotonic() - t0:.0f} s)", flush=True)
    finally:
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    elapsed = time.monotonic() - started
    if _commit() != checkout:
        warning = f"the checkout changed during the run (from {checkout}); figures may mix both"
        outcome.notes.insert(0, f"- WARNING: {warning}")
        print(f"WARNING: {warning}")
    table = format_table(outcome.metrics)
    print()
    print(table)
    print(f"\n{elapsed:.0f} s in all{' (quick)' if args.quick else ''}")
    complete = not args.quick and names == list(SCENARIOS)
    results = args.results or (HERE / "RESULTS.md" if complete else None)
    if results is not None:
        results.write_text(_report(argv, args.quick, outcome, table, elapsed), encoding="utf-8")
        print(f"wrote {results}")
    return 1 if failed else 0


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run (< 2 min)")
    parser.add_argument(
        "--only", help=f"comma-separated scenarios to run (of {', '.join(SCENARIOS)})"
    )
    parser.add_argument("--skip", help="comma-separated scenarios to leave out")
    parser.add_argument(
        "--results",
        type=Path,
        help="write the report here (default: benchmarks/RESULTS.md for a run that is not --quick)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    return parser.parse_args(argv)


def _pick(args: argparse.Namespace) -> list[str]:
    def names(text: str | None) -> list[str]:
        picked = [n.strip() for n in (text or "").split(",") if n.strip()]
        unknown = [n for n in picked if n not in SCENARIOS]
        if unknown:
            raise SystemExit(f"unknown scenario {unknown[0]!r} (of {', '.join(SCENARIOS)})")
        return picked

    only, skip = names(args.only), names(args.skip)
    return [n for n in SCENARIOS if (not only or n in only) and n not in skip]


def format_table(metrics: list[Metric]) -> str:
    rows = [("scenario", "metric", "result", "target", "met")]
    for m in metrics:
        met = "" if m.met is None else ("yes" if m.met else "NO")
        rows.append((m.scenario, m.name, m.text, m.target, met))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in rows
    ]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def machine() -> list[str]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = []
    for name in PACKAGES:
        try:
            versions.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{name} (not installed)")
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return [
        f"- code: {_commit()}",
        f"- CPU: {cpu}, {os.cpu_count()} cores (shared), {mem:.0f} GiB RAM",
        f"- OS: {platform.system()} {platform.release()}",
        f"- Python {platform.python_version()} ({platform.python_implementation()})",
        f"- packages: {', '.join(versions)}",
    ]


_ABOUT = """\
What each scenario measures, and how: [README.md](README.md). Where batchgen's CPU and memory
go, why a target is missed and what would fix it: [PROFILE.md](PROFILE.md)."""


def _commit() -> str:
    """The last commit that changed batchgen/, and the files there that differ from it."""

    def git(*args: str) -> str:
        cmd = ["git", "-C", str(HERE.parent), *args]
        done = subprocess.run(cmd, capture_output=True, text=True)
        return done.stdout if done.returncode == 0 else ""

    fmt = ["--format=%h of %cd", "--date=format:%Y-%m-%d %H:%M"]
    commit = git("log", "-1", *fmt, "--", "batchgen").strip()
    if not commit:
        return "not a git checkout"
    changed = [line[3:] for line in git("status", "--porcelain", "--", "batchgen").splitlines()]
    return f"batchgen/ as of commit {commit}" + (
        f"; uncommitted changes: {', '.join(changed)}" if changed else ""
    )


def _report(argv: list[str], quick: bool, outcome: Outcome, table: str, elapsed: float) -> str:
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    command = " ".join(["python benchmarks/run.py", *argv])
    quick_note = " (quick: small sizes, not comparable with the targets)" if quick else ""
    return "\n".join(
        [
            "# batchgen benchmark results",
            "",
            f"Written by `{command}` on {when}, {elapsed:.0f} s in all{quick_note}.",
            _ABOUT,
            "",
            "## Machine",
            "",
            *machine(),
            "",
            "## Results",
            "",
            table,
            "",
            "## Details",
            "",
            *outcome.notes,
            "",
        ]
    )


if __name__ == "__main__":
    sys.exit(main())
