"""batchgen as a step of a Ray Data pipeline: ``map_batches`` over the user's own Dataset.

::

    import ray, batchgen.run.ray_data as bg

    ds = ray.data.read_parquet("s3://bucket/reviews/")
    answered = bg.generate_batches(ds, "review.toml", concurrency=4)   # a lazy Dataset
    answered.write_parquet("s3://bucket/answers/")

Each batch's rows are rendered with the job's prompt, called with the job's model, retries and
limits, and come back as the job's typed answer columns (as ``batchgen run`` writes them), the
job's ``input.carry`` columns, ``row_id`` (the ``input.id_column``'s value, else the request's
hash), the usage of every call the row made (``prompt_tokens`` ... ``total_tokens``) and, for a
row that failed, ``error_category`` and ``error_message`` (null otherwise). Every worker's calls
pass one quota actor, so ``concurrency`` does not multiply the rate. What Ray Data gives is
Ray Data's: there is no output directory, journal or resume here (``batchgen run --engine ray``
has them).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from batchgen.backends.online.caller import Pacing, RowCaller
from batchgen.errors import BatchgenError, JobError, TemplateError
from batchgen.gemini.client import GeminiClient
from batchgen.gemini.connect import client_for
from batchgen.gemini.request import RequestBuilder, request_hash
from batchgen.input.prompts import PromptTemplate
from batchgen.job.spec import Job, load_job, resolve_api_key
from batchgen.plan import Plan
from batchgen.pricing.budget import Budget
from batchgen.records import InputRow, Outcome, Work
from batchgen.run.ray_engine import CallLog, connect, quota_actor, require_ray, shared_pacing
from batchgen.store.output import META_FIELDS, OutputLayout

__all__ = ["GenerateBatches", "generate_batches"]

ERROR_FIELDS = [pa.field("error_category", pa.string()), pa.field("error_message", pa.string())]
TOKENS = ("prompt_tokens", "output_tokens", "thinking_tokens", "cached_tokens", "total_tokens")


def generate_batches(
    ds: Any,
    job: str | Path | Job,
    *,
    api_key: str | None = None,
    concurrency: int = 2,
    batch_size: int = 64,
    **map_options: Any,
) -> Any:
    """``ds.map_batches`` with :class:`GenerateBatches` under one new quota actor.

    Args:
        ds: a ``ray.data.Dataset`` with the columns the job's prompt uses.
        job: a job file (its ``[input]`` path is not read) or a loaded Job.
        api_key: the key; by default as ``batchgen run`` resolves it (``model.api_key_env``).
        concurrency: worker actors (their calls share the job's quota).
        batch_size: rows a batch (the calls of a batch run at once).
        **map_options: passed on to ``map_batches``; ``num_cpus`` is 0.25 unless given (the
            calls wait on the network: a worker needs little CPU).

    Returns:
        The lazy Dataset of answers (see the module).
    """
    loaded = job if isinstance(job, Job) else load_job(job)
    if loaded.prompt.media or loaded.prompt.context:  # never answer a row without its files
        raise JobError(
            f"{loaded.path}: prompt.media and prompt.context are not sent by the Ray Data step "
            "yet; run the job with `batchgen run --engine ray`"
        )
    ray = require_ray()
    connect(ray, None)
    key = resolve_api_key(loaded, api_key)
    keeper = quota_actor(ray, loaded, f"batchgen-quota-{id(ds):x}-{datetime.now(UTC):%H%M%S%f}")
    map_options.setdefault("num_cpus", 0.25)
    return ds.map_batches(
        GenerateBatches,
        fn_constructor_kwargs={"job": loaded, "api_key": key, "keeper": keeper},
        concurrency=concurrency,
        batch_size=batch_size,
        batch_format="pyarrow",
        **map_options,
    )


class GenerateBatches:
    """A ``map_batches`` callable class: a pyarrow batch of rows in, their answers out.

    Construct it through ``map_batches(GenerateBatches, fn_constructor_kwargs={"job": ...,
    "api_key": ..., "keeper": ...}, batch_format="pyarrow")``; ``keeper`` is a quota actor
    (:func:`~batchgen.run.ray_engine.quota_actor`) shared by every instance.
    :func:`generate_batches` does all of it.
    """

    def __init__(self, job: Job, api_key: str, keeper: Any) -> None:
        self.job, self.api_key, self.keeper = job, api_key, keeper
        self.template = PromptTemplate(job.prompt, str(job.path))
        self.builder = RequestBuilder(job)
        self.validator = job.schema.validator()

    def __call__(self, batch: pa.Table) -> pa.Table:
        return asyncio.run(self._batch(batch))

    async def _batch(self, batch: pa.Table) -> pa.Table:
        carry = pa.schema([batch.schema.field(c) for c in self.job.input.carry])
        job = self.job
        layout = OutputLayout(
            job.schema, job.output.explode, carry, str(job.path), job.candidates, job.thoughts
        )
        plan = Plan(self.job, None, self.template, self.builder, layout, self.validator)  # type: ignore[arg-type]
        pacing, _ = shared_pacing(self.job, self.keeper, Path("."))
        connections = max(1, min(batch.num_rows, self.job.limits.most_in_flight))
        async with client_for(self.job, self.api_key, GeminiClient, connections=connections) as c:
            rows = await asyncio.gather(
                *(self._row(plan, c, pacing, item) for item in self._works(batch))
            )
        schema = pa.schema([*layout.schema, *ERROR_FIELDS])
        return pa.Table.from_pylist([r for group in rows for r in group], schema=schema)

    def _works(self, batch: pa.Table) -> Iterator[Work | Outcome]:
        id_column = self.job.input.id_column
        for position, values in enumerate(batch.to_pylist()):
            where = f"#{position}" if id_column is None else str(values.get(id_column))
            try:
                user, system = self.template.render(values, where)
                examples = self.builder.turns(self.template.render_examples(values, where))
            except TemplateError as exc:
                yield Outcome([{"row_id": where}], True, "template", str(exc))
                continue
            body = self.builder.body(user, system, examples=examples)
            digest = request_hash(body)
            row_id = where if id_column is not None else digest
            tokens = (len(user) + len(system or "")) // 4 + 1
            yield Work(InputRow(row_id, position, values), body, digest, tokens)

    async def _row(
        self, plan: Plan, client: GeminiClient, pacing: Pacing, item: Work | Outcome
    ) -> list[dict[str, Any]]:
        if isinstance(item, Outcome):
            return [_failed(item.rows[0]["row_id"], {}, item.category, item.message)]
        events = CallLog()
        budget = Budget(None, self.job.model.name)
        caller = RowCaller(plan, client, pacing, budget, "ray-data", events)
        carried = {c: item.row.values.get(c) for c in self.job.input.carry}
        try:
            outcome = await caller.call(item, 0)
        except BatchgenError as exc:  # a bad key, the day's quota: this row's answer is that
            return [_failed(item.row.row_id, carried, type(exc).__name__, str(exc))]
        usage = dict.fromkeys(TOKENS, 0)
        for entry in events.entries:
            row = entry.to_row()
            for name in TOKENS:
                usage[name] += row[name]
        if outcome.failed:
            record = _failed(item.row.row_id, carried, outcome.category, outcome.message)
            return [record | usage]
        return [row | usage | {"error_category": None, "error_message": None}
                for row in outcome.rows]  # fmt: skip


def _failed(
    row_id: str, carried: dict[str, Any], category: str | None, message: str | None
) -> dict[str, Any]:
    meta = {f.name: None for f in META_FIELDS}
    return {"row_id": row_id, **carried, **meta, "error_category": category,
            "error_message": message}  # fmt: skip
