"""Everything checked and compiled before the first request: the job against its input.

:func:`plan_job` loads nothing over the network and writes nothing: it opens the input (its
header or Parquet footer), checks every column the job needs, compiles the templates, derives
the output columns and the answer validator. ``batchgen validate`` is this plan; ``run`` starts
from it.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterator, Mapping, MutableMapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from batchgen.errors import InputError, JobError, TemplateError
from batchgen.gemini.answers import AnswerError, structured_value
from batchgen.gemini.request import Prefix, RequestBuilder, file_part, inline_part, request_hash
from batchgen.input.media import CONTEXT, BadMediaError, read_media, scan_path, scan_value
from batchgen.input.prompts import PromptTemplate
from batchgen.input.reader import InputReader
from batchgen.job.schema import AnswerValidator
from batchgen.job.spec import Job
from batchgen.keys import Keys, contains, keys_of
from batchgen.records import Answer, DoneState, InputRow, MediaRef, Outcome, Work
from batchgen.store.output import OutputLayout, error_row

MEDIA_TOKENS = 258  # a media part's prompt tokens for the rate limits: one image tile, one page


@dataclass
class Plan:
    """Everything checked and compiled before the first request: see :func:`plan_job`."""

    job: Job
    reader: InputReader
    template: PromptTemplate
    builder: RequestBuilder
    layout: OutputLayout
    validator: AnswerValidator
    context: tuple[MediaRef, ...] = ()  # prompt.context, pre-scanned

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
        context_id = self._context_id() if self.context else ""
        return self.builder.prefix(self.template.shared_system, system, context_id)

    def _context_id(self) -> str:
        """The shared context files' content identity: where each is and its size and mtime (a
        file's bytes are not read here), or a hash of bytes already in memory."""
        ids = [
            [ref.kind, ref.mime, ref.size, ref.path, ref.mtime_ns, ref.uri,
             hashlib.sha256(ref.data).hexdigest() if ref.data is not None else None]
            for ref in self.context
        ]  # fmt: skip
        return hashlib.sha256(repr(ids).encode()).hexdigest()[:16]

    def first_request(self) -> bytes:
        """The request body for the first input row, or the reason it cannot be rendered."""
        for row in self._rows():
            return self.request(row)[0]
        raise InputError(f"{self.reader.path}: no rows")

    def request(self, row: InputRow) -> tuple[bytes, int]:
        """One row's request body (its text: media are added when it is sent) and its estimated
        prompt tokens; TemplateError if it cannot be rendered."""
        user, system, examples = self._rendered(row)
        chars = len(user) + len(system or "") + len(examples or self.builder.examples)
        return self.builder.body(user, system, examples=examples), chars // 4 + 1

    def _rendered(self, row: InputRow) -> tuple[str, str | None, bytes | None]:
        """The row's user and system text, and its example turns when they differ by row."""
        user, system = self.template.render(row.values, row.row_id)
        examples = None
        if not self.template.shared_examples:
            examples = self.builder.turns(self.template.render_examples(row.values, row.row_id))
        return user, system, examples

    def _render(self, row: InputRow) -> Work | Outcome:
        try:
            user, system, examples = self._rendered(row)
        except TemplateError as exc:
            message = f"{self.reader.path}: {exc}"
            record = error_row(row.row_id, "template", message, attempts=0, at=datetime.now(UTC))
            return Outcome([record], failed=True, category="template", message=message)
        body = self.builder.body(user, system, examples=examples)
        chars = len(user) + len(system or "") + len(examples or self.builder.examples)
        tokens = chars // 4 + 1
        if not self.job.prompt.media and not self.context:
            return Work(row, body, request_hash(body), tokens)
        try:
            refs = self.context + self._media(row)
        except BadMediaError as exc:
            column, reason = exc.args
            message = (
                f"{self.reader.path}: row {row.row_id}: column {column!r}: {reason}; "
                "nothing was sent for the row"
            )
            record = error_row(row.row_id, "input", message, attempts=0, at=datetime.now(UTC))
            return Outcome([record], failed=True, category="input", message=message)
        tokens += MEDIA_TOKENS * len(refs)
        return Work(row, body, media_hash(body, refs), tokens, refs, (user, system, examples))

    def media_scan(self) -> tuple[int, list[str]]:
        """Pre-scan every media cell of the input (existence, type, size; a few bytes read of
        each file): how many there are, and one line for each bad one."""
        count, bad = 0, []
        for row in self._rows():
            try:
                count += len(self._media(row))
            except BadMediaError as exc:
                column, reason = exc.args
                bad.append(f"{self.reader.path}: row {row.row_id}: column {column!r}: {reason}")
        return count, bad

    def sample_body(self, row: InputRow) -> bytes | None:
        """The row's whole request with its media inline (URIs and Files API names by
        fileData), for countTokens on a sample: nothing is uploaded. None for bad media;
        TemplateError if it cannot be rendered."""
        user, system, examples = self._rendered(row)
        if not self.job.prompt.media and not self.context:
            return self.builder.body(user, system, examples=examples)
        try:
            refs = self.context + self._media(row)
            parts = [
                file_part(r.mime, f"{self.job.model.base_url}/{self.job.model.api_version}/{r.uri}")
                if r.kind == "file"
                else file_part(r.mime, r.uri or "")
                if r.kind == "uri"
                else inline_part(r.mime, read_media(r))
                for r in refs
            ]
        except BadMediaError:
            return None
        context = parts[: len(self.context)]
        media = parts[len(self.context) :]
        return self.builder.body(user, system, context, media, examples=examples)

    def media_pairs(self, row: InputRow) -> list[tuple[str, Path | bytes]]:
        """The row's context and media as (MIME type, path or bytes), for counting them offline;
        URIs and Files API names are left out (their bytes are not here). BadMediaError for a
        bad one."""
        return _pairs(self.context + self._media(row))

    def context_pairs(self) -> list[tuple[str, Path | bytes]]:
        """The job's context files as (MIME type, path or bytes), as :meth:`media_pairs`."""
        return _pairs(self.context)

    def _media(self, row: InputRow) -> tuple[MediaRef, ...]:
        """The pre-scanned media of a row (BadMediaError(column, reason) for a bad one)."""
        refs = []
        source = self.reader.path  # an input in an object store: relative to the working dir
        base = self.job.media.directory or (
            source.parent if isinstance(source, Path) else Path.cwd()
        )
        types = self.job.prompt.media_types
        for column in self.job.prompt.media:
            value = row.values.get(column)
            if value is None or (isinstance(value, str) and not value.strip()):
                continue  # a null (or, in CSV, empty) cell sends no part
            try:
                refs.append(scan_value(value, column, base, types.get(column)))
            except BadMediaError as exc:
                raise BadMediaError(column, str(exc)) from None
        return tuple(refs)

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
    reader = InputReader(job.input, {})
    needs = template.bind(reader.available)
    needs.update(dict.fromkeys(job.input.carry, "input.carry"))
    needs.update(dict.fromkeys(job.prompt.media, "prompt.media"))
    if job.input.id_column:
        needs[job.input.id_column] = "input.id_column"
    reader.need(needs, every=template.whole_row)
    carry = pa.schema([reader.arrow_schema().field(c) for c in job.input.carry])
    layout = OutputLayout(
        job.schema, job.output.explode, carry, str(job.path), job.candidates, job.thoughts
    )
    validator = job.schema.validator()
    builder = RequestBuilder(job, _shared_examples(job, template, validator))
    context = tuple(_context(job))
    return Plan(job, reader, template, builder, layout, validator, context)


def _context(job: Job) -> Iterator[MediaRef]:
    if job.prompt.context and CONTEXT in job.prompt.media:  # the two would not be told apart
        raise JobError(
            f"{job.path}: prompt.media: a column named {CONTEXT!r} cannot be used beside "
            "prompt.context; rename it (input.rename)"
        )
    for file in job.prompt.context:
        try:
            yield scan_path(Path(file), CONTEXT)
        except BadMediaError as exc:
            raise JobError(f"{job.path}: prompt.context: {exc}") from None


def _pairs(refs: tuple[MediaRef, ...]) -> list[tuple[str, Path | bytes]]:
    pairs: list[tuple[str, Path | bytes]] = []
    for ref in refs:
        if ref.path is not None:
            pairs.append((ref.mime, Path(ref.path)))
        elif ref.data is not None:
            pairs.append((ref.mime, ref.data))
    return pairs


def _identity(ref: MediaRef) -> str:
    if ref.data is not None:
        return hashlib.sha256(ref.data).hexdigest()
    return f"{ref.path or ref.uri}:{ref.size}"


def media_hash(body: bytes, refs: tuple[MediaRef, ...]) -> str:
    """The request hash of a media row: its text request and what its media are (a path and its
    size, a URI, or the hash of raw bytes), so a row's request is known without reading files."""
    said = [
        f"{r.column}:{r.kind}:{r.mime}:"
        + (
            hashlib.sha256(r.data).hexdigest()
            if r.data is not None
            else f"{r.path or r.uri}:{r.size}"
        )
        for r in refs
    ]
    return request_hash(body + "\n".join(said).encode())
