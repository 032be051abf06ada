"""The same rows at the standard, Flex and Batch tiers: values, requests and the ledger's cost.

    python benchmarks/tiers.py [ROWS]        # default 10,000 review_insights rows; ~1 min

Runs jobs/review_insights.toml (its input repeated to ROWS rows with fresh ids) through
``run_job`` against the emulator in this process, once per tier, with 10% Flex capacity 503s
and 30% of Flex requests served at standard. Prints, per tier, rows done, requests, the
emulator's served-tier counts and the report's cost; then whether batch and standard gave the
same typed values and each tier's cost divided by standard's. Expected: batch 0.500; Flex
0.5 + 0.5 × (share served at standard).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from batchgen.emulator import EmulatorConfig, EmulatorThread
from batchgen.job.spec import Overrides, load_job
from batchgen.pricing.file import load_prices
from batchgen.reports.report import report
from batchgen.run.runner import RunOptions, run_job
from batchgen.store.outdir import OutputDir

ROOT = Path(__file__).resolve().parent.parent
KEY = "tiers-bench-key"
VOLATILE = ["run", "latency_ms", "completed_at", "attempts", "response_id"]


def big_input(folder: Path, rows: int) -> Path:
    table = pq.read_table(ROOT / "sample_inputs" / "product_reviews.parquet")
    big = pa.concat_tables([table] * -(-rows // len(table))).slice(0, rows)
    ids = pa.array([f"r{i:06d}" for i in range(rows)])
    big = big.set_column(big.schema.get_field_index("review_id"), "review_id", ids)
    pq.write_table(big, folder / "big.parquet")
    return folder / "big.parquet"


def job_file(folder: Path) -> Path:
    shutil.copytree(ROOT / "jobs", folder / "jobs")
    path = folder / "jobs" / "review_insights.toml"
    text = path.read_text().replace("requests_per_minute = 1000", "requests_per_minute = 1000000")
    path.write_text(text + "\n[batch]\nrows_per_chunk = 4000\npoll_initial_seconds = 0.1\n"
                    "poll_max_seconds = 0.5\n")  # fmt: skip
    return path


def main(rows: int) -> None:
    folder = Path(tempfile.mkdtemp(prefix="batchgen-tiers-"))
    try:
        source, path = big_input(folder, rows), job_file(folder)
        config = EmulatorConfig(fault_rates={"capacity": 0.1}, flex_standard_share=0.3,
                                batch_pending_s=0.5, batch_running_s=1.0, seed=3)  # fmt: skip
        costs: dict[str, float] = {}
        with EmulatorThread(config) as server:
            for tier in ("standard", "flex", "batch"):
                before = dict(server.emulator.counts)
                out = folder / f"out-{tier}"
                overrides = Overrides(input=source, output=out, base_url=server.base_url, tier=tier)
                started = time.perf_counter()
                summary = run_job(load_job(path, overrides),
                                  RunOptions(api_key=KEY, prices=load_prices()))  # fmt: skip
                seconds = time.perf_counter() - started
                served = {k: v - before.get(k, 0) for k, v in server.emulator.counts.items()
                          if k.startswith("tier:")}  # fmt: skip
                costs[tier] = report([out]).total["cost_usd"]
                print(f"{tier}: {summary.rows_done} done, {summary.rows_failed} failed, "
                      f"{summary.requests} requests, served {served}, report ${costs[tier]:.5f}, "
                      f"{seconds:.1f} s")  # fmt: skip
        same = [
            OutputDir(folder / f"out-{t}").read("results").drop_columns(VOLATILE).sort_by("row_id")
            for t in ("standard", "batch")
        ]
        print(f"batch and standard give the same typed values: {same[0].equals(same[1])} "
              f"({same[0].num_rows} rows)")  # fmt: skip
        for tier in ("flex", "batch"):
            print(f"{tier} / standard cost = {costs[tier] / costs['standard']:.4f}")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10_000)
