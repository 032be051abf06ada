"""Explicit context caching (issue 21 items 1-2): a ~12k-token shared prefix over 300 rows.

    python benchmarks/caching.py               # ~1 min against the emulator in this process
    python benchmarks/caching.py --batch       # the same job at tier "batch" (a few seconds)
    python benchmarks/caching.py --engine ray  # the same runs with --engine ray (a local
                                               # Ray instance, started once for all)

The same job (gemini-3.8-flash, a ~12,000-token system instruction every row shares, 300 rows,
the limits a user gets by default) runs twice against the emulator (20 ms per answer), with
``[cache] mode = "auto"`` (the default) and ``"off"``, each into its own output; the report
prices both ledgers. Then the same pair with the shared prefix a 48-page PDF manual as
``[prompt] context`` instead of the system instruction (258 tokens a page: ~12,400 tokens).
Then the break-even call count per model, from the packaged price table:
the fewest calls sharing a prefix (of at least the model's minimum) for which a cache is
cheaper, with one hour and with a quarter of an hour of storage.

With ``--batch`` the job runs in Batch Mode (``tier = "batch"``, 300 rows a chunk): with the
cache, a one-row probe batch and then one batch of the other rows, every line naming the cache;
the break-even table is at batch rates with the storage hours a batch run weighs (the default
expected batch time plus the margin).

With ``--engine ray`` the driver creates the one cache and the Ray workers send the calls
naming it; the break-even table is left out (it does not depend on the engine).

Prints markdown tables (benchmarks/RESULTS.md, "Issue 21: context caching").
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from batchgen.backends.batch.cache import DEFAULT_BATCH_S, MARGIN_S
from batchgen.emulator import EmulatorConfig, EmulatorThread
from batchgen.job.spec import Overrides, load_job
from batchgen.pricing.caching import break_even_rows
from batchgen.pricing.file import load_prices
from batchgen.pricing.table import utc_today
from batchgen.reports.report import report
from batchgen.run.runner import RunOptions, run_job

KEY = "caching-bench-key"
ROWS = 300
SYSTEM = "You label household things carefully and briefly, one label each. " * 730
JOB = """
[input]
path = "rows.csv"
id_column = "id"
[model]
name = "gemini-3.8-flash"
tier = "{tier}"
[batch]
rows_per_chunk = 300
poll_initial_seconds = 0.05
poll_max_seconds = 0.1
[prompt]
{shared}
user = "Describe {{{{ name }}}} in a few words."
[output]
directory = "{out}"
[cache]
mode = "{mode}"
[response_schema]
type = "OBJECT"
required = ["label", "size"]
properties = {{ label = {{ type = "STRING" }}, size = {{ type = "INTEGER" }} }}
"""


def manual(pages: int) -> bytes:
    """A text PDF of ``pages`` pages, made as the sample inputs' manual is."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "sample_inputs"))
    from make_media import pdf  # the sample inputs' maker, not a copy of it

    return pdf(
        [
            [
                f"Page {p}",
                *(f"Section {p}.{n}: how household things are labelled." for n in range(30)),
            ]
            for p in range(pages)
        ]
    )


def one(
    folder: Path,
    server: EmulatorThread,
    mode: str,
    tier: str,
    context: bool = False,
    engine: str = "local",
) -> dict[str, Any]:
    folder.mkdir()
    with (folder / "rows.csv").open("w") as f:
        f.write("id,name\n")
        f.writelines(f"r{i},item-{i:03d}\n" for i in range(ROWS))
    out = folder / "out"
    shared = f"system = {json.dumps(SYSTEM)}"
    if context:
        (folder / "manual.pdf").write_bytes(manual(48))
        shared = 'context = ["manual.pdf"]'
    text = JOB.format(shared=shared, out=out, mode=mode, tier=tier)
    (folder / "job.toml").write_text(text)
    counts = server.emulator.counts
    before = dict(counts)
    started = time.monotonic()
    job = load_job(folder / "job.toml", Overrides(base_url=server.base_url))
    summary = run_job(job, RunOptions(api_key=KEY, handle_signals=False, engine=engine))
    seconds = time.monotonic() - started
    total = report([out]).total
    calls = counts["generateContent"] - before.get("generateContent", 0)
    batches = counts["batchGenerateContent"] - before.get("batchGenerateContent", 0)
    calls += counts["batch_rows"] - before.get("batch_rows", 0)  # a batch line is a call
    used = counts["cachedContent:used"] - before.get("cachedContent:used", 0)
    return {
        "rows": summary.rows_done,
        "calls": calls,
        "batches": batches,
        "created": counts["cachedContents.create"] - before.get("cachedContents.create", 0),
        "used": used / calls if calls else 0.0,
        "alive": server.emulator.caches_alive(),
        "cost": total["cost_usd"],
        "seconds": seconds,
        "notes": [n for n in summary.notes if "cache" in n],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", action="store_true", help='the job at tier = "batch"')
    parser.add_argument("--engine", choices=("local", "ray"), default="local")
    args = parser.parse_args()
    tier, engine = ("batch" if args.batch else "standard"), args.engine
    folder = Path(tempfile.mkdtemp(prefix="bench-caching-"))
    config = EmulatorConfig(api_keys=frozenset({KEY}), latency_ms=20, batch_pending_s=0.2,
                            batch_running_s=0.3)  # fmt: skip
    if engine == "ray":  # one local instance for all runs (each run joins it)
        import ray

        ray.init(include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    try:
        with EmulatorThread(config) as server:
            pairs = {
                "system instruction": (
                    one(folder / "auto", server, "auto", tier, engine=engine),
                    one(folder / "off", server, "off", tier, engine=engine),
                ),
                "context PDF": (
                    one(folder / "ctx-auto", server, "auto", tier, context=True, engine=engine),
                    one(folder / "ctx-off", server, "off", tier, context=True, engine=engine),
                ),
            }
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        if engine == "ray":
            ray.shutdown()
    for prefix, (cached, plain) in pairs.items():
        print(f"tier = {tier!r}, engine: {engine}, shared prefix: {prefix}.\n")
        print("| metric | mode = auto | mode = off |\n|---|---|---|")
        for key in ("rows", "calls", "batches", "created", "used", "alive", "cost", "seconds"):
            digits = 4 if key == "cost" else 2
            a, b = (
                f"{v:.{digits}f}" if isinstance(v, float) else str(v)
                for v in (cached[key], plain[key])
            )
            print(f"| {key} | {a} | {b} |")
        print(f"| cost ratio auto ÷ off | {cached['cost'] / plain['cost']:.3f} | target ≤ 0.5 |")
        print()
        for mode, result in (("auto", cached), ("off", plain)):
            print("".join(f"note (mode = {mode}): {n}\n" for n in result["notes"]))
    if engine == "ray":
        return
    hours = (DEFAULT_BATCH_S + MARGIN_S) / 3600 if tier == "batch" else 1.0
    table = load_prices()
    day = utc_today().isoformat()
    print(f"Rates of {day} (a retired model is priced as the model its calls are routed to).\n")
    print(
        f"| model | priced as | input | cached | storage/h | min | break-even {hours:g} h | ¼ h |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name in sorted(table.models):
        price = table.price(name)
        if price is None:
            continue
        hour, quarter = (break_even_rows(price, hours=h, tier=tier) for h in (hours, 0.25))
        rates = price.rates(tier)
        print(
            f"| {name} | {price.name} | {rates.input:g} | {rates.cached:g} | "
            f"{price.storage_rate} | {price.min_cache_tokens} | {hour} | {quarter} |"
        )


if __name__ == "__main__":
    main()
