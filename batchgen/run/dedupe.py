"""Identical requests paid once (``[output] dedupe = true``).

Rows whose rendered request is the same (the same request hash) are one question. The first row
of a hash is sent (its *leader*); a later row with that hash (a *twin*) is not sent at all:

- while the leader is in flight the twin waits for it, so two rows never pay for one answer;
- once the leader is answered, the twin gets that answer at once, written under its own row id
  and carried values, with zero tokens in its row and a ``reused`` entry in the usage ledger;
- a twin of a row answered by an earlier run (in OUTPUT) gets that row's answer the same way.

A leader that *fails* (after its retries) hands its failure to the twins waiting for it: each
gets its own failure record saying whose call failed, so none is lost and none fails silently.
They are failed rows like any other: the next run (without ``--skip-failed``) asks again, once
for the whole group. Sending a twin after its leader failed would pay again for a request that
just failed its retries.

This sits between the reader and the backend, so it works for both: the online backend calls
each distinct request once, and Batch Mode puts one line per distinct request in its files. The
answers kept for twins that come later are bounded (:data:`KEEP`, the oldest dropped first): a
twin whose answer was dropped is simply sent, and paid, again.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

from batchgen.backends.base import Sink
from batchgen.keys import EMPTY, Keys, contains, keys_of
from batchgen.plan import Plan
from batchgen.records import REUSED, Answer, Billed, InputRow, Outcome, Usage, Work
from batchgen.store.outdir import OutputDir
from batchgen.store.output import ERRORS_SCHEMA

KEEP = 100_000  # answers kept for twins still to come (about their rows' size each)
_ZERO = {"prompt_tokens": 0, "output_tokens": 0, "thinking_tokens": 0, "cached_tokens": 0,
         "total_tokens": 0, "attempts": 0, "latency_ms": None}  # fmt: skip


class Twins:
    """Which rows share a request, what each leader became, and its twins' copies of it."""

    def __init__(self, plan: Plan, run_id: str, clock: Callable[[], datetime] | None = None):
        self.job, self.run_id = plan.job, run_id
        self.now = clock or (lambda: datetime.now(UTC))
        # hash of a leader in flight -> its twins' rows (not their bodies: the leader's is sent)
        self.waiting: dict[str, list[InputRow]] = {}
        self.answered: OrderedDict[str, Outcome] = OrderedDict()  # hash -> the leader's outcome
        self.out: OutputDir | None = None  # an output whose answers twins may take, not read yet
        self.done: Keys = EMPTY

    def earlier(self, out: OutputDir) -> None:
        """Note the request hashes an earlier run answered (their answers are read only when a
        row asks one of them: a rerun with nothing new reads nothing more)."""
        self.out, self.done = out, out.done_state("request_hash").done

    def needs_earlier(self, work: Work) -> bool:
        """Whether ``work`` asks what an earlier run answered, and those answers are not read."""
        if self.out is None or work.hash in self.answered:
            return False
        return bool(contains(self.done, keys_of([work.hash]))[0])

    def load(self) -> None:
        """The answers of an earlier run, by request hash (one row id's rows each), so twins of
        rows already done are not paid for again."""
        out, self.out = self.out, None  # once
        if out is None:
            return
        table = out.read("results")
        if table is None:
            return
        rows = table.drop_columns(["run"]).to_pylist()
        first: dict[str, str] = {}
        for row in rows:
            key = row.get("request_hash")
            if not key or first.setdefault(key, row["row_id"]) != row["row_id"]:
                continue
            kept = self.answered.setdefault(key, Outcome([], failed=False))
            kept.rows.append(row)
        while len(self.answered) > KEEP:
            self.answered.popitem(last=False)

    def take(self, work: Work) -> Outcome | None:
        """Whether ``work`` goes to the backend (None), waits for its leader (an empty failed
        outcome, never reported), or is answered now (its copy of the leader's outcome)."""
        kept = self.answered.get(work.hash)
        if kept is not None:
            return self.copy(kept, work.row)
        twins = self.waiting.get(work.hash)
        if twins is None:
            self.waiting[work.hash] = []
            return None
        twins.append(work.row)
        return _WAITS

    def settled(self, outcome: Outcome) -> list[Outcome]:
        """A row ended: the copies for the twins waiting on it (none if it had none)."""
        key = _hash(outcome)
        if key is None:
            return []
        twins = self.waiting.pop(key, [])
        if not outcome.failed:
            self.answered[key] = outcome
            while len(self.answered) > KEEP:
                self.answered.popitem(last=False)
        return [self.copy(outcome, twin) for twin in twins]

    def copy(self, outcome: Outcome, row: InputRow) -> Outcome:
        """The leader's outcome under the twin's row id and carried values."""
        own: dict[str, Any] = {"row_id": row.row_id}
        own.update({c: row.values[c] for c in self.job.input.carry})
        if outcome.failed:
            leader = outcome.rows[0]["row_id"]
            message = f"{outcome.message} (the same request as row {leader}, whose call failed)"
            record = {**outcome.rows[0], **own, "message": message, "attempts": 0}
            record = {k: record.get(k) for k in ERRORS_SCHEMA.names}
            return Outcome([record], failed=True, category=outcome.category, message=message)
        at = self.now()
        rows = [{**r, **own, **_ZERO, "completed_at": at} for r in outcome.rows]
        return Outcome(rows, failed=False)

    def billed(self, outcome: Outcome) -> Billed:
        """The ledger entry of a row answered by its twin: no call, no cost."""
        first = outcome.rows[0]
        # no model_version: no model answered this row now (the row's result says which did)
        answer = Answer(None, first.get("finish_reason"), None, Usage(), None,
                        first.get("response_id"), True)  # fmt: skip
        return Billed(
            self.run_id, self.job.name, first["row_id"], 0, self.job.model.name, answer, REUSED,
            self.now(), self.job.model.tier,
        )  # fmt: skip


_WAITS = Outcome([], failed=True, category="waits")  # a marker: the row waits for its leader


def _hash(outcome: Outcome) -> str | None:
    if not outcome.rows:
        return None
    key = outcome.rows[0].get("request_hash")
    return key if isinstance(key, str) and key else None


class DedupeSink:
    """The backend's :class:`~batchgen.backends.base.Sink` that also answers each finished
    row's twins, in front of the run's own sink."""

    def __init__(self, sink: Sink, twins: Twins) -> None:
        self.sink, self.twins = sink, twins

    async def outcome(self, outcome: Outcome) -> None:
        await self.sink.outcome(outcome)
        for copy in self.twins.settled(outcome):
            await self.answer(copy)

    async def answer(self, copy: Outcome) -> None:
        """A twin's outcome, with its ``reused`` ledger entry when it was answered."""
        if not copy.failed:
            await self.sink.billed(self.twins.billed(copy))
        await self.sink.outcome(copy)

    def requested(self) -> None:
        self.sink.requested()

    async def billed(self, entry: Billed) -> None:
        await self.sink.billed(entry)

    def server_delay(self, delay: float, asked: float | None) -> None:
        self.sink.server_delay(delay, asked)

    async def journaled(self) -> None:
        await self.sink.journaled()


async def leaders(works: AsyncIterator[Work], sink: DedupeSink) -> AsyncIterator[Work]:
    """The rows of ``works`` whose request is not answered or asked already; the others are
    answered from the answers kept, or wait for their leader."""
    async for work in works:
        if sink.twins.needs_earlier(work):
            await asyncio.to_thread(sink.twins.load)
        taken = sink.twins.take(work)
        if taken is None:
            yield work
        elif taken is not _WAITS:
            await sink.answer(taken)
