"""Reading JSON Lines against CSV: the same rows, the pre-scan and the read of a run.

    python benchmarks/jsonl_read.py [--rows 200000] [--rounds 2]

Writes one table of rows as CSV, JSON Lines and gzip-compressed JSON Lines, then times
``InputReader.scan()`` followed by every ``batches()`` (what ``batchgen run`` does before and
while it sends), best of the rounds, and prints rows/s and the ratio to CSV.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import shutil
import tempfile
import time
from pathlib import Path

from batchgen.input.reader import InputReader
from batchgen.job.spec import InputSpec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="batchgen-jsonl-"))
    rows = [{"id": f"r{i}", "product": f"Product number {i}", "notes": "some notes " * 8, "n": i}
            for i in range(args.rows)]  # fmt: skip
    with (folder / "rows.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    lines = "".join(json.dumps(r) + "\n" for r in rows).encode()
    (folder / "rows.jsonl").write_bytes(lines)
    (folder / "rows.jsonl.gz").write_bytes(gzip.compress(lines))
    needs = {"id": "id", "product": "prompt", "notes": "prompt"}
    rates = {}
    try:
        for name, fmt in (("rows.csv", "csv"), ("rows.jsonl", "jsonl"), ("rows.jsonl.gz", "jsonl")):
            best = float("inf")
            for _ in range(args.rounds):
                started = time.perf_counter()
                reader = InputReader(InputSpec(folder / name, fmt, "id"), needs)  # type: ignore[arg-type]
                reader.scan()
                read = sum(len(batch) for batch in reader.batches())
                best = min(best, time.perf_counter() - started)
            rates[name] = read / best
            print(f"{name}: {read:,} rows in {best:.2f} s: {rates[name]:,.0f} rows/s "
                  f"(ratio to CSV {rates[name] / rates['rows.csv']:.2f})")  # fmt: skip
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
