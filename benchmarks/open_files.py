"""A run under a low open-file limit, at the defaults a user gets.

    python benchmarks/open_files.py [--soft 256] [--hard 256] [--rows 1500] [--rpm 3000]
                                    [--latency-ms 10000]

Starts the emulator with the given latency, writes a job with no concurrency setting (so
"auto" wants rate x latency = 500 calls in flight at the defaults), and runs
``python -m batchgen run`` under ``ulimit -n SOFT:HARD``. Prints the exit code, the wall time,
the requests the emulator received and the note batchgen printed about the limit. Before the
open-file room (issue 20) the default case ended with exit 4 ("unreachable") after 1 row.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness import write_input, write_job

from batchgen.emulator import EmulatorConfig, EmulatorThread


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--soft", type=int, default=256)
    parser.add_argument("--hard", type=int, default=256)
    parser.add_argument("--rows", type=int, default=1500)
    parser.add_argument("--rpm", type=int, default=3000)
    parser.add_argument("--latency-ms", type=float, default=10_000)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="batchgen-open-files-"))
    job = write_job(folder, write_input(folder / "rows.csv", args.rows), concurrency=None,
                    rpm=args.rpm)  # fmt: skip

    def lower() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (args.soft, args.hard))

    with EmulatorThread(EmulatorConfig(latency_ms=args.latency_ms)) as server:
        began = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", "batchgen", "run", str(job), "--base-url", server.base_url],
            env={**os.environ, "GEMINI_API_KEY": "bench-key-0123456789"},
            capture_output=True, text=True, timeout=1800, preexec_fn=lower, check=False,
        )  # fmt: skip
        took = time.monotonic() - began
        requests = server.emulator.counts["generateContent"]
    notes = [line for line in done.stderr.splitlines() + done.stdout.splitlines()
             if "open-file limit" in line]  # fmt: skip
    print(f"ulimit -n {args.soft}:{args.hard}, {args.rows:,} rows at {args.rpm:,}/min, "
          f"{args.latency_ms / 1000:g} s latency: exit {done.returncode} in {took:.1f} s, "
          f"{requests:,} requests")  # fmt: skip
    print("\n".join(dict.fromkeys(notes)) or "(no note about the open-file limit)")
    if done.returncode:
        print(done.stderr[-800:])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
