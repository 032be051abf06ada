"""Durability benchmarks: answers paid twice after kills, resumed-run memory, journal cost.

    python benchmarks/durability.py                  # all three, ~6 min; prints a table
    python benchmarks/durability.py --only kill      # kill | memory | throughput
    python benchmarks/durability.py --baseline REF   # throughput against REF (default HEAD~1)

* ``kill``: 5,000 rows, emulator latency 1 s, ``concurrency = 64``, the job's default output
  settings; six SIGKILLs at random moments (seeded), then a run to completion. Reports the calls
  the server answered, the answers paid twice (per kill and in all), whether any row is lost or
  duplicated, and how far the ledger's prompt tokens fall short of what the server billed.
* ``memory``: an input of 2,010,000 rows. A fresh run with ``--limit 10000`` against a resumed
  run over 2,000,000 done rows (results parts built synthetically) that has the same 10,000
  rows to do: both scan the same input, so the difference is the done state. Peak RSS (VmHWM).
* ``throughput``: 30,000 rows, no latency, concurrency 64: this tree against a baseline commit
  (checked out into a temporary worktree), three rounds alternating, the best of each.
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from harness import (
    STATS_PATH,
    EmulatorProcess,
    batchgen_cmd,
    child_env,
    run_child,
    write_input,
    write_job,
)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PROMPT_TOKENS = 108  # every harness prompt has this many (the emulator's count)


def stats(emulator: EmulatorProcess) -> dict[str, int]:
    conn = http.client.HTTPConnection("127.0.0.1", emulator.port, timeout=10)
    try:
        conn.request("GET", STATS_PATH)
        counts: dict[str, int] = json.loads(conn.getresponse().read())
        return counts
    finally:
        conn.close()


def visible_done(out: Path) -> int:
    """Rows done as `batchgen status` counts them (parts and journal)."""
    sys.path.insert(0, str(ROOT))
    from batchgen.reports.status import output_status

    return output_status(out).rows_done if (out / "job.json").exists() else 0


def kill(folder: Path, rows: int = 5000, kills: int = 6, seed: int = 11) -> list[str]:
    rng = random.Random(seed)
    job = write_job(folder, write_input(folder / "input.csv", rows), concurrency=64)
    out = folder / "out"
    lines = []
    with EmulatorProcess(latency_ms=1000) as emulator:
        cmd = batchgen_cmd(job, emulator.base_url) + ["--quiet"]
        lost_before = 0
        for k in range(kills):
            proc = subprocess.Popen(
                cmd, cwd=folder, env=child_env(),
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            time.sleep(rng.uniform(3.0, 8.0))
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            calls = stats(emulator).get("generateContent", 0)
            lost = calls - visible_done(out)
            lines.append(f"kill {k + 1}: {calls} calls so far; paid twice by this kill: "
                         f"{lost - lost_before}")  # fmt: skip
            lost_before = lost
        final = run_child(cmd, cwd=folder, env=child_env(), timeout=600)
        calls = stats(emulator).get("generateContent", 0)
    ids = pq.read_table(out / "results", columns=["row_id"]).column("row_id").to_pylist()
    for part in [*out.glob("results/*.parquet"), *out.glob("usage/*.parquet")]:
        pq.read_table(part)  # every part readable
    ledger = pq.read_table(out / "usage", columns=["prompt_tokens"]).column("prompt_tokens")
    reported = sum(ledger.to_pylist())
    billed = calls * PROMPT_TOKENS
    twice = calls - rows
    lines += [
        f"final run exit {final.returncode}; {len(ids)} result rows, {len(set(ids))} distinct, "
        f"{rows - len(set(ids))} lost",
        f"calls {calls} for {rows} rows: {twice} paid twice in all = {twice / rows:.1%} of the "
        f"rows ({twice / kills:.0f} a kill; concurrency 64)",
        f"ledger prompt tokens {reported:,} vs billed {billed:,}: short by {billed - reported:,} "
        f"= {(billed - reported) / PROMPT_TOKENS:.0f} calls (those in flight at the kills)",
    ]
    return lines


def memory(folder: Path, done: int = 2_000_000, todo: int = 10_000) -> list[str]:
    total = done + todo
    folder.mkdir(parents=True, exist_ok=True)
    csv = folder / "input.csv"
    with csv.open("w") as f:
        f.write("id,name\n")
        for start in range(0, total, 100_000):
            stop = min(total, start + 100_000)
            f.write("".join(f"row-{i:08d},thing {i}\n" for i in range(start, stop)))
    job = folder / "job.toml"
    job.write_text(f"""[input]
path = "{csv}"
id_column = "id"
[model]
name = "gemini-2.5-flash-lite"
[prompt]
user = "Describe {{{{ name }}}} in a few words."
[response_schema]
type = "OBJECT"
required = ["label"]
properties = {{ label = {{ type = "STRING" }}, size = {{ type = "INTEGER" }} }}
[limits]
concurrency = 64
requests_per_minute = 1000000000
[output]
directory = "out"
""")
    lines = []
    with EmulatorProcess() as emulator:
        cmd = batchgen_cmd(job, emulator.base_url) + ["--quiet"]
        fresh = run_child([*cmd, "--limit", str(todo)], cwd=folder, env=child_env())
        _fake_done(folder / "out", done)
        resumed = run_child(cmd, cwd=folder, env=child_env())
    lines.append(f"fresh run (--limit {todo:,} of {total:,} rows): exit {fresh.returncode}, "
                 f"peak {fresh.peak_rss_mb:.0f} MB, {fresh.wall:.1f} s")  # fmt: skip
    lines.append(f"resumed over {done:,} done rows, {todo:,} to do: exit {resumed.returncode}, "
                 f"peak {resumed.peak_rss_mb:.0f} MB, {resumed.wall:.1f} s")  # fmt: skip
    lines.append(f"ratio {resumed.peak_rss_mb / fresh.peak_rss_mb:.2f} (target <= 1.2)")
    return lines


def _fake_done(out: Path, done: int) -> None:
    """Replace the fresh run's results by results for rows 10,000.. done+10,000 (synthetic)."""
    parts = sorted((out / "results").glob("part-*.parquet"))
    schema = pq.read_schema(parts[0])
    template = pq.read_table(parts[0]).slice(0, 1).to_pylist()[0]
    for part in parts:
        part.unlink()
    for n, start in enumerate(range(10_000, 10_000 + done, 100_000)):
        ids = [f"row-{i:08d}" for i in range(start, min(10_000 + done, start + 100_000))]
        columns = {f.name: pa.array([template[f.name]] * len(ids), f.type) for f in schema}
        columns["row_id"] = pa.array(ids, pa.string())
        table = pa.table(columns, schema=schema)
        pq.write_table(table, out / "results" / f"part-20261201T000000-aaaaaa-{n:05d}.parquet")


def throughput(folder: Path, baseline: str, rows: int = 30_000, rounds: int = 3) -> list[str]:
    """Wall-clock rows/s and client CPU per row of this tree against ``baseline``."""
    base = folder / "baseline"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(base), baseline],
                   check=True, capture_output=True)  # fmt: skip
    try:
        data = write_input(folder / "input.csv", rows)
        best: dict[str, float] = {}
        cpu: dict[str, float] = {}
        with EmulatorProcess() as emulator:
            for r in range(rounds):
                for name, tree in (("this tree", ROOT), (baseline, base)):
                    run = folder / f"{name.replace(' ', '_')}-{r}"
                    job = write_job(run, data, concurrency=64)
                    env = child_env() | {"PYTHONPATH": str(tree)}
                    before = stats(emulator).get("generateContent", 0)
                    result = run_child(batchgen_cmd(job, emulator.base_url) + ["--quiet"],
                                       cwd=run, env=env)  # fmt: skip
                    answered = stats(emulator).get("generateContent", 0) - before
                    assert result.returncode == 0 and answered == rows, result.stderr[-500:]
                    best[name] = max(best.get(name, 0.0), rows / result.wall)
                    per_row = result.cpu_seconds / rows * 1e6
                    cpu[name] = min(cpu.get(name, float("inf")), per_row)
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base)],
                       capture_output=True)  # fmt: skip
    mine, theirs = best["this tree"], best[baseline]
    return [
        f"{rows:,} rows end to end (best of {rounds}): this tree {mine:.0f} rows/s, "
        f"{baseline} {theirs:.0f} rows/s: ratio {mine / theirs:.3f} (target >= 0.95)",
        f"client CPU per row (least of {rounds}, start-up and scan included): this tree "
        f"{cpu['this tree']:.0f} µs, {baseline} {cpu[baseline]:.0f} µs: ratio "
        f"{cpu[baseline] / cpu['this tree']:.3f}",
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="kill,memory,throughput")
    parser.add_argument("--baseline", default="HEAD~1")
    parser.add_argument("--rows", type=int, default=30_000, help="rows of the throughput case")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="batchgen-durability-"))
    try:
        for name in args.only.split(","):
            started = time.monotonic()
            if name == "kill":
                lines = kill(folder / "kill")
            elif name == "memory":
                lines = memory(folder / "memory")
            else:
                lines = throughput(folder / "throughput", args.baseline, args.rows, args.rounds)
            print(f"## {name} ({time.monotonic() - started:.0f} s)")
            print("\n".join(f"- {line}" for line in lines), flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
