"""Paying less for the same answers (issue 21): dedupe, candidates, few-shot turns, safety.

    python benchmarks/savers.py            # ~30 s against the emulator in this process

Each case runs a job through ``run_job`` against the emulator (20 ms per answer, the job's
default limits: concurrency "auto") and reads what the emulator received and what the report
prices, next to a baseline made in the same session:

- dedupe: 400 rows holding 100 distinct prompts, ``[output] dedupe = true`` against the same job
  without it; then a rerun of the deduplicated job.
- candidates: 50 rows with ``candidateCount = 3`` against 150 rows (each prompt three times,
  dedupe off) with one candidate each: the same 150 answers.
- few-shot: 50 rows with two ``[[prompt.examples]]``: the share of requests whose turns
  alternate user/model/user/model/user.
- safety: 50 rows with two ``[[safety_settings]]``: the share of requests that carry them.

Prints one markdown table (benchmarks/RESULTS.md, "Issue 21").
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from batchgen.emulator import EmulatorConfig, EmulatorThread
from batchgen.job.spec import Overrides, load_job
from batchgen.pricing.file import load_prices
from batchgen.reports.report import report
from batchgen.run.runner import RunOptions, RunSummary, run_job

KEY = "savers-bench-key"
JOB = """
[input]
path = "rows.csv"
id_column = "id"
[model]
name = "gemini-2.5-flash"
[prompt]
system = "You label catalogue items. Answer with a short label and a size from 1 to 10."
user = "Describe {{{{ name }}}} in a few words."
[output]
directory = "{out}"
{output}
[generation]
{generation}
[response_schema]
type = "OBJECT"
required = ["label", "size"]
properties = {{ label = {{ type = "STRING" }}, size = {{ type = "INTEGER" }} }}
{extra}
"""
EXAMPLES = """
[[prompt.examples]]
user = "Describe item-demo in a few words."
model = { label = "a demo item", size = 3 }
[[prompt.examples]]
user = "Describe a {{ name }} twin in a few words."
model = '{"label": "twin of {{ name }}", "size": 4}'
"""
SAFETY = """
[[safety_settings]]
category = "HARM_CATEGORY_HARASSMENT"
threshold = "BLOCK_ONLY_HIGH"
[[safety_settings]]
category = "HARM_CATEGORY_DANGEROUS_CONTENT"
threshold = "BLOCK_NONE"
"""


class Bench:
    def __init__(self, folder: Path, server: EmulatorThread) -> None:
        self.folder, self.server = folder, server
        self.rows: list[tuple[str, str, str]] = []  # (case, metric, value)

    def run(self, name: str, rows: list[str], output: str = "", generation: str = "",
            extra: str = "") -> tuple[RunSummary, int, float, list[dict[str, Any]]]:  # fmt: skip
        """(summary, calls the emulator answered, report cost, bodies received) of one job."""
        folder = self.folder / name
        folder.mkdir(exist_ok=True)
        with (folder / "rows.csv").open("w") as f:
            f.write("id,name\n")
            f.writelines(f"r{i},{n}\n" for i, n in enumerate(rows))
        text = JOB.format(out="out", output=output, generation=generation, extra=extra)
        (folder / "job.toml").write_text(text)
        emulator = self.server.emulator
        before, seen = emulator.counts["generateContent"], len(emulator.received)
        job = load_job(folder / "job.toml", Overrides(base_url=self.server.base_url))
        summary = run_job(job, RunOptions(api_key=KEY, prices=load_prices()))
        cost = report([folder / "out"]).total["cost_usd"] or 0.0
        calls = emulator.counts["generateContent"] - before
        return summary, calls, cost, emulator.received[seen:]

    def add(self, case: str, metric: str, value: object) -> None:
        self.rows.append((case, metric, str(value)))


def dedupe(b: Bench) -> None:
    names = [f"item-{i % 100:03d}" for i in range(400)]
    base, base_calls, base_cost, _ = b.run("dedupe-off", names)
    on, calls, cost, _ = b.run("dedupe-on", names, output="dedupe = true")
    again, again_calls, _, _ = b.run("dedupe-on", names, output="dedupe = true")
    b.add("dedupe", "calls, 400 rows of 100 prompts: off", base_calls)
    b.add("dedupe", "calls, 400 rows of 100 prompts: dedupe = true", calls)
    b.add("dedupe", "result rows with dedupe (rows reused)", f"{on.output_rows} ({on.rows_reused})")
    b.add("dedupe", "report cost: dedupe ÷ off", f"{cost / base_cost:.3f}")
    b.add("dedupe", "rerun: calls", again_calls)
    assert base.output_rows == 400 and again.requests == 0


def candidates(b: Bench) -> None:
    names = [f"item-{i:03d}" for i in range(50)]
    three, calls, cost, _ = b.run("cand-3", names, generation="candidateCount = 3")
    base, base_calls, base_cost, _ = b.run("cand-1", [n for n in names for _ in range(3)])
    b.add("candidates", "candidateCount = 3 over 50 rows: calls", calls)
    b.add("candidates", "candidateCount = 3 over 50 rows: result rows", three.output_rows)
    b.add("candidates", "baseline (150 rows, 1 candidate): calls", base_calls)
    b.add("candidates", "report cost: 3 candidates ÷ baseline", f"{cost / base_cost:.3f}")
    assert base.output_rows == 150


def turns(b: Bench) -> None:
    names = [f"item-{i:03d}" for i in range(50)]
    _, _, _, bodies = b.run("few-shot", names, extra=EXAMPLES)
    roles = [[c.get("role") for c in body["contents"]] for body in bodies]
    good = sum(r == ["user", "model", "user", "model", "user"] for r in roles)
    b.add("few-shot", "requests with user/model/user/model/user turns", f"{good}/{len(bodies)}")
    twin = [json.loads(body["contents"][3]["parts"][0]["text"])["label"] for body in bodies]
    rendered = sum(t.startswith("twin of item-") for t in twin)
    b.add(
        "few-shot", "requests with the example rendered for their row", f"{rendered}/{len(bodies)}"
    )
    _, _, _, bodies = b.run("safety", names, extra=SAFETY)
    carried = sum(len(body.get("safetySettings") or []) == 2 for body in bodies)
    b.add("safety", "requests carrying both safetySettings", f"{carried}/{len(bodies)}")


def main() -> None:
    folder = Path(tempfile.mkdtemp(prefix="batchgen-savers-"))
    try:
        with EmulatorThread(EmulatorConfig(latency_ms=20, record=True)) as server:
            b = Bench(folder, server)
            for case in (dedupe, candidates, turns):
                case(b)
        width = max(len(m) for _, m, _ in b.rows)
        print(f"| case       | {'metric'.ljust(width)} | result |")
        print(f"|------------|{'-' * (width + 2)}|--------|")
        for case, metric, value in b.rows:
            print(f"| {case.ljust(10)} | {metric.ljust(width)} | {value} |")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
