"""How many rows ask what another row asks: the rows ``[output] dedupe = true`` would not pay
for (numbers; ``validate`` and ``estimate`` word them)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from batchgen.errors import TemplateError
from batchgen.gemini.request import request_hash
from batchgen.keys import keys_of
from batchgen.plan import Plan


@dataclass(frozen=True)
class Repeats:
    """Rows rendered, and how many of them repeat an earlier row's request (same hash)."""

    rows: int
    repeated: int
    dedupe: bool  # whether the job already asks for it

    @property
    def distinct(self) -> int:
        """The calls a deduplicated run makes (before retries)."""
        return self.rows - self.repeated


def count_repeats(plan: Plan) -> Repeats:
    """Render every row and count the requests that repeat (a row that does not render is
    left out: it is never sent)."""
    hashes: list[str] = []
    for batch in plan.reader.batches():
        for row in batch:
            try:
                body, _ = plan.request(row)
            except TemplateError:
                continue
            hashes.append(request_hash(body))
    distinct = len(np.unique(keys_of(hashes))) if hashes else 0
    return Repeats(len(hashes), len(hashes) - distinct, plan.job.output.dedupe)
