"""10,000 rows of review_insights through the Batch Mode pieces and online, against the emulator.

    python benchmarks/batch_roundtrip.py

Chunks of 4,000 rows are written, uploaded, submitted, waited for, downloaded and collected
(batch_steps), with 2% line errors; then every row is asked online. It prints how many rows have
the same typed values both ways, the line failures, the total tokens of each path (the same
tokens: at half price, half the cost) and the emulator's count of rows submitted twice.
It drives the pieces directly; a whole run at the batch tier is `batchgen run --tier batch`.
"""

from __future__ import annotations

import asyncio
import collections
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import pyarrow as pa
import pyarrow.parquet as pq

from batchgen.backends.batch.jsonl import ResultCollector, group_works, write_chunk
from batchgen.backends.batch.steps import collect_chunk, submit_chunk, upload_chunk
from batchgen.emulator import EmulatorConfig, EmulatorServer
from batchgen.gemini.answers import parse_response, structured_value
from batchgen.gemini.batch_client import BatchClient
from batchgen.gemini.client import GeminiClient
from batchgen.gemini.transport import Transport
from batchgen.job.spec import Overrides, load_job
from batchgen.keys import EMPTY
from batchgen.plan import plan_job
from batchgen.pricing.file import load_prices
from batchgen.pricing.table import PriceTable
from batchgen.records import Answer, DoneState, Work
from batchgen.store.batches import BatchStore

ROOT = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent
ROWS, PER_CHUNK = 10_000, 4_000


def grow(src: Path, dest: Path) -> None:
    table = pq.read_table(src)
    reps = -(-ROWS // len(table))
    big = pa.concat_tables([table] * reps).slice(0, ROWS)
    ids = pa.array([f"r{i:05d}" for i in range(ROWS)])
    big = big.set_column(big.schema.get_field_index("review_id"), "review_id", ids)
    pq.write_table(big, dest)


async def main() -> None:
    tmp = Path(tempfile.mkdtemp())
    for folder in ("jobs", "sample_inputs"):
        shutil.copytree(ROOT / folder, tmp / folder)
    grow(tmp / "sample_inputs/product_reviews.parquet", tmp / "big.parquet")
    async with EmulatorServer(EmulatorConfig(batch_line_error_rate=0.02)) as server:
        job = load_job(
            tmp / "jobs/review_insights.toml",
            Overrides(input=tmp / "big.parquet", base_url=server.base_url),
        )
        plan = plan_job(job)
        works = [
            w
            for w in plan.works(DoneState(EMPTY, EMPTY), None, False, collections.Counter())
            if isinstance(w, Work)
        ]
        store = BatchStore(tmp / "out")
        collector = ResultCollector(plan, "bench")
        started = time.perf_counter()
        results = []
        async with aiohttp.ClientSession() as session:
            client = BatchClient(Transport(session, job.model, "bench-key-0123456789", 600))
            for i, group in enumerate(group_works(works, PER_CHUNK)):
                chunk = write_chunk(store.chunk_path(f"c{i}"), group)
                record = store.add(f"c{i}", "bench", chunk.rows)
                record = await submit_chunk(
                    store, client, await upload_chunk(store, client, record)
                )
                done = await collect_chunk(
                    store, client, record, {w.row.row_id: w for w in group}, collector
                )
                store.mark(record.chunk, done.state)
                results += done.collected
            batch_s = time.perf_counter() - started
            online = GeminiClient(Transport(session, job.model, "bench-key-0123456789", 60))
            sem = asyncio.Semaphore(64)

            async def ask(w: Work) -> Answer:
                async with sem:
                    return parse_response((await online.generate(w.body))[0])

            answers = await asyncio.gather(*(ask(w) for w in works))
        by_id = {c.row_id: c for c in results}
        counts = server.emulator.counts
        same = differ = failed = 0
        batch_tokens = online_tokens = 0
        batch_cost = online_cost = 0.0
        prices = load_prices()
        for w, a in zip(works, answers, strict=True):
            got = by_id[w.row.row_id]
            if got.outcome.failed:
                failed += 1
                continue
            ids = {"row_id": w.row.row_id, **{c: w.row.values[c] for c in job.input.carry}}
            (want,) = plan.layout.rows(ids, structured_value(a, plan.validator), {})
            (row,) = got.outcome.rows
            if {k: row[k] for k in want} == want:
                same += 1
            else:
                differ += 1
            if got.billed is not None:
                batch_tokens += got.billed.answer.usage.total
                batch_cost += _cost(prices, got.billed.to_row())
            online_tokens += a.usage.total
            online_cost += (
                prices.cost(
                    job.model.name,
                    prompt=a.usage.prompt,
                    output=a.usage.output,
                    thinking=a.usage.thinking,
                    cached=a.usage.cached,
                )
                or 0.0
            )
        print(
            f"rows {len(works)}, chunks {-(-len(works) // PER_CHUNK)}, batch path {batch_s:.2f} s "
            f"(write+upload+create+download+collect), same typed values {same}, differ {differ}, "
            f"line failures {failed} ({failed / len(works):.2%}), tokens batch/online "
            f"{batch_tokens}/{online_tokens}; emulator batch_rows {counts['batch_rows']}, "
            f"repeated {counts['batch_rows_repeated']}; ledger cost batch/online "
            f"${batch_cost:.4f}/${online_cost:.4f} = {batch_cost / online_cost:.3f}"
        )


def _cost(prices: PriceTable, row: dict[str, Any]) -> float:
    """A ledger row's cost at the tier it names."""
    return (
        prices.cost(
            row["model"],
            prompt=row["prompt_tokens"],
            output=row["output_tokens"],
            thinking=row["thinking_tokens"],
            cached=row["cached_tokens"],
            tier=row["tier"],
        )
        or 0.0
    )


asyncio.run(main())
