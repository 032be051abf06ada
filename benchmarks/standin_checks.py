"""Issue 21's checks against the separate stand-in (benchmarks/standin_savers.py), at defaults.

    python benchmarks/standin_checks.py     # ~3 min: the stand-in answers in 0.3-1.5 s

The stand-in is written from the REST reference apart from the emulator (strict about unknown
fields, its own token rule, 403 for a gone cache, candidates with their index, a new answer per
call). Every job runs with the limits a user gets by default (1,000 requests a minute,
concurrency "auto", the output's default flushing):

- caching: gemini-3.8-flash, a ~16,000-token (by the stand-in's rule) system instruction every
  row shares, 300 rows, ``mode = "auto"`` against ``"off"``: caches made, share of calls naming
  the cache, caches alive at the end, and the report's cost ratio;
- kill: the same cached job run by the CLI, SIGKILLed once 100 calls are answered, then run
  again: caches alive at the end, rows paid twice;
- dedupe: 400 rows of 100 distinct prompts with ``dedupe = true``: calls and result rows;
- candidates: 50 rows with ``candidateCount = 3``: calls and result rows.

Prints one markdown table (benchmarks/RESULTS.md, "Issue 21 against a separate stand-in").
"""

from __future__ import annotations

import collections
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from batchgen.job.spec import Overrides, load_job
from batchgen.pricing.file import load_prices
from batchgen.reports.report import report
from batchgen.run.runner import RunOptions, run_job
from batchgen.store.layout import part_files

KEY = "standin-key"
SYSTEM = "You label household things carefully and briefly, one label each. " * 730
SCHEMA = """
[response_schema]
type = "OBJECT"
required = ["label"]
properties = { label = { type = "STRING" } }
"""


def job(folder: Path, rows: int, prompts: int | None = None, **keys: str) -> Path:
    """``rows`` rows (``prompts`` distinct names, else all distinct) and a job over them;
    ``keys`` are extra lines by section: ``prompt='system = "..."'``."""
    folder.mkdir(parents=True)
    with (folder / "rows.csv").open("w") as f:
        f.write("id,name\n")
        f.writelines(f"r{i},item-{i % (prompts or rows):03d}\n" for i in range(rows))
    sections = {
        "input": 'path = "rows.csv"\nid_column = "id"',
        "model": 'name = "gemini-3.8-flash"',
        "prompt": 'user = "Describe {{ name }} in a few words."',
        "output": 'directory = "out"',
    }
    for name, line in keys.items():
        sections[name] = sections.get(name, "") + "\n" + line
    text = "".join(f"[{name}]\n{body}\n\n" for name, body in sections.items()) + SCHEMA
    (folder / "job.toml").write_text(text)
    return folder / "job.toml"


def stats(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url + "/_standin/stats", timeout=10) as r:
        result: dict[str, Any] = json.loads(r.read())
    return result


def run(path: Path, url: str) -> dict[str, Any]:
    before = stats(url)
    summary = run_job(
        load_job(path, Overrides(base_url=url)),
        RunOptions(api_key=KEY, handle_signals=False, prices=load_prices()),
    )
    after = stats(url)
    got = {k: after.get(k, 0) - before.get(k, 0) for k in after if isinstance(after[k], int)}
    return {"summary": summary, "alive": after.get("caches_alive", 0), **got}


def rows_of(out: Path, kind: str) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    return [r for part in part_files(out, kind) for r in pq.read_table(part).to_pylist()]


def killed_and_rerun(folder: Path, url: str) -> dict[str, Any]:
    path = job(folder, 400, prompt=f"system = {json.dumps(SYSTEM)}")
    env = {**os.environ, "GEMINI_API_KEY": KEY}
    args = [sys.executable, "-m", "batchgen", "run", str(path), "--base-url", url, "--quiet"]
    before = stats(url)
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while stats(url).get("answered", 0) - before.get("answered", 0) < 100:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    alive_after_kill = stats(url)["caches_alive"]
    again = run(path, url)
    paid = collections.Counter(u["row_id"] for u in rows_of(folder / "out", "usage")
                               if u["outcome"] == "ok")  # fmt: skip
    return {
        "rows": len({r["row_id"] for r in rows_of(folder / "out", "results")}),
        "alive_after_kill": alive_after_kill,
        "alive_at_end": again["alive"],
        "paid_twice": sum(n - 1 for n in paid.values()),
        "calls": stats(url).get("generateContent", 0) - before.get("generateContent", 0),
        "created": stats(url).get("caches_created", 0) - before.get("caches_created", 0),
    }


def main() -> None:
    script = Path(__file__).with_name("standin_savers.py")
    proc = subprocess.Popen([sys.executable, str(script), "--key", KEY], stdout=subprocess.PIPE,
                            text=True)  # fmt: skip
    assert proc.stdout is not None
    url = re.match(r"http://127\.0\.0\.1:\d+", proc.stdout.readline())
    assert url is not None, "the stand-in did not start"
    base = url.group(0)
    folder = Path(tempfile.mkdtemp(prefix="bench-standin-"))
    try:
        system = f"system = {json.dumps(SYSTEM)}"
        cached = run(job(folder / "auto", 300, prompt=system), base)
        plain = run(job(folder / "off", 300, prompt=system, cache='mode = "off"'), base)
        ratio = (
            report([folder / "auto" / "out"]).total["cost_usd"]
            / (report([folder / "off" / "out"]).total["cost_usd"])
        )
        kill = killed_and_rerun(folder / "kill", base)
        dedupe = run(job(folder / "dedupe", 400, 100, output="dedupe = true"), base)
        candidates = run(job(folder / "cand", 50, generation="candidateCount = 3"), base)
        results = {
            "dedupe": len(rows_of(folder / "dedupe" / "out", "results")),
            "cand": len(rows_of(folder / "cand" / "out", "results")),
        }
    finally:
        proc.terminate()
        proc.wait()
        shutil.rmtree(folder, ignore_errors=True)
    calls = cached["answered"]
    print("| check (at the job's defaults) | target | measured |\n|---|---|---|")
    print(f"| caching: caches created | 1 | {cached['caches_created']} |")
    share = cached["calls_naming_a_cache"] / calls
    print(f"| caching: share of calls naming it | ≥ 0.95 | {share:.2f} |")
    print(f"| caching: caches alive at the end | 0 | {cached['alive']} |")
    print(f"| caching: report cost auto ÷ off | ≤ 0.5 | {ratio:.3f} |")
    print(f"| caching: rows done (auto, off) | 300, 300 | {cached['summary'].rows_done}, "
          f"{plain['summary'].rows_done} |")  # fmt: skip
    print(f"| kill: caches alive after the SIGKILL | 1 (recorded) | {kill['alive_after_kill']} |")
    print(f"| kill: caches alive after the rerun | 0 | {kill['alive_at_end']} |")
    print(f"| kill: caches created over both runs | 1 (reused) | {kill['created']} |")
    print(f"| kill: rows answered | 400 | {kill['rows']} |")
    print(f"| kill: rows billed twice in the ledger | 0 | {kill['paid_twice']} |")
    extra = kill["calls"] - 400
    print(f"| kill: calls received beyond 400 (in flight at the kill) | small | {extra} |")
    print(f"| dedupe: calls for 400 rows of 100 prompts | ≤ 105 | {dedupe['answered']} |")
    print(f"| dedupe: result rows | 400 | {results['dedupe']} |")
    print(f"| candidates: calls for 50 rows × 3 | 50 | {candidates['answered']} |")
    print(f"| candidates: result rows | 150 | {results['cand']} |")
    refused = sum(v for k, v in cached.items() if k.startswith("status:4") and k != "status:429")
    print(f"| 4xx answers the stand-in gave (auto run) | 0 | {refused} |")


if __name__ == "__main__":
    main()
