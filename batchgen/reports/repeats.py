"""How many rows ask what another row asks: the rows ``[output] dedupe = true`` would not pay
for (numbers; ``validate`` and ``estimate`` word them)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from batchgen.errors import TemplateError
from batchgen.gemini.request import request_hash
from batchgen.keys import keys_of
from batchgen.plan import Plan

ROWS_COUNTED = 200_000  # rows rendered to count repeats: enough to see them, quick on any input


@dataclass(frozen=True)
class Repeats:
    """Rows rendered (the first :data:`ROWS_COUNTED` at most), and how many of them repeat an
    earlier row's request (same hash)."""

    rows: int
    repeated: int
    dedupe: bool  # whether the job already asks for it
    whole: bool = True  # every row of the input was counted

    @property
    def distinct(self) -> int:
        """The calls a deduplicated run makes (before retries)."""
        return self.rows - self.repeated


def count_repeats(plan: Plan, most: int = ROWS_COUNTED) -> Repeats:
    """Render the first ``most`` rows and count the requests that repeat (a row that does not
    render is left out: it is never sent)."""
    hashes: list[str] = []
    seen, whole = 0, True
    for batch in plan.reader.batches():
        if seen >= most:
            whole = False
            break
        for row in batch[: most - seen]:
            try:
                body, _ = plan.request(row)
            except TemplateError:
                continue
            hashes.append(request_hash(body))
        whole = whole and seen + len(batch) <= most
        seen += len(batch)
    distinct = len(np.unique(keys_of(hashes))) if hashes else 0
    return Repeats(len(hashes), len(hashes) - distinct, plan.job.output.dedupe, whole)
