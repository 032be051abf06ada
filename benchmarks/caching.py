"""Explicit context caching (issue 21 items 1-2): a ~12k-token shared prefix over 300 rows.

    python benchmarks/caching.py               # ~1 min against the emulator in this process
    python benchmarks/caching.py --engine ray  # the same two runs with --engine ray (a local
                                               # Ray instance, started once for both)

The same job (gemini-3.8-flash, a ~12,000-token system instruction every row shares, 300 rows,
the limits a user gets by default) runs twice against the emulator (20 ms per answer), with
``[cache] mode = "auto"`` (the default) and ``"off"``, each into its own output; the report
prices both ledgers. Then the break-even call count per model, from the packaged price table:
the fewest calls sharing a prefix (of at least the model's minimum) for which a cache is
cheaper, with one hour and with a quarter of an hour of storage.

With ``--engine ray`` the driver creates the one cache and the Ray workers send the calls
naming it; the break-even table is left out (it does not depend on the engine).

Prints markdown tables (benchmarks/RESULTS.md, "Issue 21: context caching").
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

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
[prompt]
system = {system}
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


def one(folder: Path, server: EmulatorThread, mode: str, engine: str) -> dict[str, float]:
    folder.mkdir()
    with (folder / "rows.csv").open("w") as f:
        f.write("id,name\n")
        f.writelines(f"r{i},item-{i:03d}\n" for i in range(ROWS))
    out = folder / "out"
    text = JOB.format(system=json.dumps(SYSTEM), out=out, mode=mode)
    (folder / "job.toml").write_text(text)
    counts = server.emulator.counts
    before = dict(counts)
    started = time.monotonic()
    job = load_job(folder / "job.toml", Overrides(base_url=server.base_url))
    summary = run_job(job, RunOptions(api_key=KEY, handle_signals=False, engine=engine))
    seconds = time.monotonic() - started
    total = report([out]).total
    calls = counts["generateContent"] - before.get("generateContent", 0)
    used = counts["cachedContent:used"] - before.get("cachedContent:used", 0)
    return {
        "rows": summary.rows_done,
        "calls": calls,
        "created": counts["cachedContents.create"] - before.get("cachedContents.create", 0),
        "used": used / calls if calls else 0.0,
        "alive": server.emulator.caches_alive(),
        "cost": total["cost_usd"],
        "seconds": seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", choices=("local", "ray"), default="local")
    engine = parser.parse_args().engine
    folder = Path(tempfile.mkdtemp(prefix="bench-caching-"))
    if engine == "ray":  # one local instance for both runs (each run joins it)
        import ray

        ray.init(include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    try:
        with EmulatorThread(EmulatorConfig(api_keys=frozenset({KEY}), latency_ms=20)) as server:
            cached = one(folder / "auto", server, "auto", engine)
            plain = one(folder / "off", server, "off", engine)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        if engine == "ray":
            ray.shutdown()
    print(f"engine: {engine}\n")
    print("| metric | mode = auto | mode = off |\n|---|---|---|")
    for key in ("rows", "calls", "created", "used", "alive", "cost", "seconds"):
        digits = 4 if key == "cost" else 2
        a, b = (
            f"{v:.{digits}f}" if isinstance(v, float) else str(v) for v in (cached[key], plain[key])
        )
        print(f"| {key} | {a} | {b} |")
    print(f"| cost ratio auto ÷ off | {cached['cost'] / plain['cost']:.3f} | target ≤ 0.5 |")
    if engine == "ray":
        return
    print()
    table = load_prices()
    day = utc_today().isoformat()
    print(f"Rates of {day} (a retired model is priced as the model its calls are routed to).\n")
    print("| model | priced as | input | cached | storage/h | min | break-even 1 h | ¼ h |")
    print("|---|---|---|---|---|---|---|---|")
    for name in sorted(table.models):
        price = table.price(name)
        if price is None:
            continue
        hour, quarter = (break_even_rows(price, hours=h) for h in (1.0, 0.25))
        print(
            f"| {name} | {price.name} | {price.input} | {price.cached} | {price.storage_rate} | "
            f"{price.min_cache_tokens} | {hour} | {quarter} |"
        )


if __name__ == "__main__":
    main()
