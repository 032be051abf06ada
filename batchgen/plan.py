"""Everything checked and compiled before the first request: the job against its input.

:func:`plan_job` loads nothing over the network and writes nothing: it opens the input (its
header or Parquet footer), checks every column the job needs, compiles the templates, derives
the output columns and the answer validator. ``batchgen validate`` is this plan; ``run`` starts
from it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping, MutableMapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa

from batchgen.errors import InputError, JobError, TemplateError
from batchgen.gemini.answers import AnswerError, structured_value
from batchgen.gemini.request import Prefix, RequestBuilder, request_hash
from batchgen.input.prompts import PromptTemplate
from batchgen.input.reader import InputReader
from batchgen.job.schema import AnswerValidator
from batchgen.job.spec import Job
from batchgen.keys import Keys, contains, keys_of
from batchgen.records import Answer, DoneState, InputRow, Outcome, Work
from batchgen.store.output import OutputLayout, error_row


@dataclass
class Plan:
    """Everything checked and compiled before the first request: see :func:`plan_job`."""

    job: Job
    reader: InputReader
    template: PromptTemplate
    builder: RequestBuilder
    layout: OutputLayout
    validator: AnswerValidator

    @property
    def max_output(self) -> int | None:
        """generation.maxOutputTokens, when the job sets it (the advice on a cut answer)."""
        limit = self.job.generation.get("maxOutputTokens")
        return limit if isinstance(limit, int) and not isinstance(limit, bool) else None

    def works(
        self,
        done: DoneState,
        limit: int | None,
        skip_failed: bool,
        counts: MutableMapping[str, int],
    ) -> Iterator[Work | Outcome]:
        """Rendered requests for the rows still to do; template failures as outcomes.

        With an id column a row is done when its id is in the results; without one, when its
        request (by hash) is, so a grown or reordered input sends only its new rows.
        """
        skip = np.union1d(done.done, done.failed) if skip_failed else done.done
        left = limit
        for batch in self.reader.batches():
            if left is not None:
                batch, left = batch[:left], left - min(left, len(batch))
            yield from self._batch(batch, skip, counts)
            if left == 0:
                return

    def _batch(
        self, rows: list[InputRow], skip: Keys, counts: MutableMapping[str, int]
    ) -> Iterator[Work | Outcome]:
        if self.job.input.id_column is not None:
            done = contains(skip, keys_of([row.row_id for row in rows]))
            counts["skipped"] += int(done.sum())
            yield from (self._render(row) for row, d in zip(rows, done, strict=True) if not d)
            return
        items = [self._render(row) for row in rows]
        hashes = [item.hash if isinstance(item, Work) else "" for item in items]
        done = contains(skip, keys_of(hashes)) & np.array([bool(h) for h in hashes], dtype=bool)
        counts["skipped"] += int(done.sum())
        yield from (item for item, d in zip(items, done, strict=True) if not d)

    def _rows(self) -> Iterator[InputRow]:
        for batch in self.reader.batches():
            yield from batch

    def prefix(self) -> Prefix | None:
        """The request prefix every row shares (what an explicit cache would hold), or None."""
        try:
            system = self.template.system_text()
        except TemplateError:
            return None
        return self.builder.prefix(self.template.shared_system, system)

    def first_request(self) -> bytes:
        """The request body for the first input row, or the reason it cannot be rendered."""
        for row in self._rows():
            return self.request(row)[0]
        raise InputError(f"{self.reader.path}: no rows")

    def request(self, row: InputRow) -> tuple[bytes, int]:
        """One row's request body and its estimated prompt tokens; TemplateError if it cannot
        be rendered."""
        user, system = self.template.render(row.values, row.row_id)
        examples = None
        if not self.template.shared_examples:
            examples = self.builder.turns(self.template.render_examples(row.values, row.row_id))
        chars = len(user) + len(system or "") + len(examples or self.builder.examples)
        return self.builder.body(user, system, examples), chars // 4 + 1

    def _render(self, row: InputRow) -> Work | Outcome:
        try:
            body, tokens = self.request(row)
        except TemplateError as exc:
            message = f"{self.reader.path}: {exc}"
            record = error_row(row.row_id, "template", message, attempts=0, at=datetime.now(UTC))
            return Outcome([record], failed=True, category="template", message=message)
        return Work(row, body, request_hash(body), tokens)

    def answered(self, work: Work, answer: Answer, meta: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The result rows of one answer (one or more per candidate); ``meta`` is batchgen's own
        columns (:func:`~batchgen.store.output.result_meta`). Raises AnswerError when no
        candidate is usable; with several, the unusable ones are rows with a
        ``candidate_error``."""
        row = work.row
        ids = {"row_id": row.row_id, **{c: row.values[c] for c in self.job.input.carry}}
        if self.job.candidates == 1 or not answer.candidates:  # blocked: no candidate at all
            value = structured_value(answer, self.validator, self.max_output)
            return self.layout.rows(ids, value, {**meta, "thoughts": answer.thoughts})
        rows: list[dict[str, Any]] = []
        first: AnswerError | None = None
        for i, candidate in enumerate(answer.candidates):
            one = dataclasses.replace(
                answer, text=candidate.text, finish_reason=candidate.finish_reason
            )
            extra = {**meta, "candidate": i, "thoughts": candidate.thoughts}
            try:
                value = structured_value(one, self.validator, self.max_output)
            except AnswerError as exc:
                first = first or exc
                failed = f"{exc.category}: {exc.message}"
                rows += self.layout.unusable(ids, {**extra, "candidate_error": failed})
                continue
            rows += self.layout.rows(ids, value, extra)
        if first is not None and all(r.get("candidate_error") for r in rows):
            raise first  # no candidate usable: the row's answer failed
        return rows


def _shared_examples(job: Job, template: PromptTemplate, validator: AnswerValidator) -> bytes:
    """The few-shot turns every row shares (none when they use columns); an example whose model
    answer is a table must be an answer the schema allows."""
    for i, example in enumerate(job.prompt.examples):
        if not isinstance(example.model, str) and (problem := validator.problem(example.model)):
            raise JobError(
                f"{job.path}: prompt.examples[{i}].model breaks the response schema: {problem}"
            )
    if not template.shared_examples or not job.prompt.examples:
        return b""
    try:
        return RequestBuilder.turns(template.render_examples({}, "(examples)"))
    except TemplateError as exc:
        raise JobError(f"{job.path}: {exc}") from None


def plan_job(job: Job) -> Plan:
    """Check the job against its input and compile everything; no network, no writes."""
    template = PromptTemplate(job.prompt, str(job.path))
    needs = dict.fromkeys(template.variables, "used in the prompt")
    needs.update(dict.fromkeys(job.input.carry, "input.carry"))
    if job.input.id_column:
        needs[job.input.id_column] = "input.id_column"
    reader = InputReader(job.input, needs)
    carry = pa.schema([reader.arrow_schema().field(c) for c in job.input.carry])
    layout = OutputLayout(
        job.schema, job.output.explode, carry, str(job.path), job.candidates, job.thoughts
    )
    validator = job.schema.validator()
    builder = RequestBuilder(job, _shared_examples(job, template, validator))
    return Plan(job, reader, template, builder, layout, validator)
