"""What a run did: the counters, kept by the summary itself as the run reports events."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from batchgen.records import Outcome, Usage


@dataclass
class RunSummary:
    """What a run did. ``exit_code`` is 0 only when nothing failed and nothing remains."""

    output: Path
    run_id: str = ""
    rows_total: int = 0  # rows in the input (or the limit)
    rows_skipped: int = 0  # already done by an earlier run (or failed, with skip_failed)
    rows_done: int = 0
    rows_failed: int = 0
    rows_remaining: int = 0  # to do and not finished: a rerun takes them
    output_rows: int = 0
    requests: int = 0
    rows_reused: int = 0  # rows answered by a twin's call (output.dedupe): no call of their own
    usage: Counter[str] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)
    first_errors: dict[str, str] = field(default_factory=dict)  # category → first message
    answered_by: Counter[str] = field(default_factory=Counter)  # modelVersion → calls
    parts: int = 0
    seconds: float = 0.0
    moved_aside: Path | None = None  # where fresh=True moved the previous output
    folded: int = 0  # journal segments of killed runs folded into parts before this run
    cost: float | None = None  # USD billed by this run; None when the model has no price
    # signal, time_budget, max_cost, unreachable, outage, api, input, disk, internal
    stopped_by: str | None = None
    notes: list[str] = field(default_factory=list)  # said once, e.g. what held the run back

    @property
    def exit_code(self) -> int:
        if self.rows_failed:
            return 1
        return 4 if self.rows_remaining else 0

    def finished(self, outcome: Outcome) -> None:
        """A row ended: in results, or as a failure record."""
        if outcome.failed:
            self.rows_failed += 1
            category = outcome.category or "unknown"
            self.failures[category] += 1
            self.first_errors.setdefault(category, outcome.message or "")
        else:
            self.rows_done += 1
            self.output_rows += len(outcome.rows)

    def billed(self, usage: Usage, model_version: str | None) -> None:
        """A call returned usage: it is paid for."""
        u = self.usage
        u["prompt"] += usage.prompt
        u["output"] += usage.output
        u["thinking"] += usage.thinking
        u["cached"] += usage.cached
        u["total"] += usage.total
        if model_version:
            self.answered_by[model_version] += 1
