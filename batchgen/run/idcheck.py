"""Before a resumed run pays: do the input's ids still name the rows the output holds?

Ids are matched as text. The same rows written again with the id column of another type (Parquet
floats ``1.0`` where ints ``1`` were, ``7`` where the text ``007`` was) match no done row, and
every row would be bought again without a word. So when the output holds about as many done rows
as the input has (between half and twice), yet fewer than a tenth of the input's ids are among
them, the run refuses before any call, showing a few ids of each side.

A new input of about the same size written to the same output looks alike and is refused too:
its way forward is another output (or ``--fresh``, which moves the old one aside).
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal, InvalidOperation

from batchgen.errors import CheckpointError
from batchgen.input.reader import InputReader, Scan
from batchgen.keys import count_contained
from batchgen.records import DoneState
from batchgen.store.reading import OutputReader

MATCHED_BELOW = 0.10  # of the input's ids (up to the limit) found done: fewer is suspicious
COMPARABLE = (0.5, 2.0)  # done rows as a share of the input's rows: "the counts agree"
SAMPLE = 10_000  # ids read from each side to find pairs such as '1.0' / '1'
SHOWN = 3


def check_ids(
    reader: InputReader, scan: Scan, out: OutputReader, state: DoneState, limit: int | None
) -> None:
    """Refuse (CheckpointError) when the input's ids match few of the output's done rows
    although the counts agree: the id column most likely changed type."""
    if scan.id_keys is None or not len(state.done):
        return  # rows matched by request hash, or nothing done yet
    rows = min(scan.rows, limit or scan.rows)
    done = len(state.done)
    low, high = COMPARABLE
    if done < low * rows or done > high * scan.rows:
        return  # a different amount of work: a new or grown input, not the same rows again
    matched = count_contained(state.done, scan.id_keys, rows)
    if matched >= MATCHED_BELOW * rows:
        return
    ours, theirs = _examples(reader.ids(min(rows, SAMPLE)), out.sample_ids(SAMPLE))
    how = "none" if matched == 0 else f"only {matched:,}"
    raise CheckpointError(
        f"{out.path}: {how} of the {rows:,} ids in {reader.path.name} match the {done:,} done "
        f"rows in the output (ids like {ours} now vs {theirs} before: did the id column "
        f"{reader.spec.id_column!r} change type?); make the id column the same type as before "
        "(e.g. text, or integers rather than floats), or rerun with --fresh (fresh=True) to "
        "start over (the old output is moved aside) or choose another output"
    )


def _examples(ours: list[str], theirs: list[str]) -> tuple[str, str]:
    """A few ids of each side, paired where they differ only in form ('1.0' and '1')."""
    before = {_canonical(t): t for t in reversed(theirs)}
    pairs = [(o, before[_canonical(o)]) for o in ours
             if _canonical(o) in before and before[_canonical(o)] != o][:SHOWN]  # fmt: skip
    if not pairs:
        pairs = list(zip(ours[:SHOWN], theirs[:SHOWN], strict=False))
    return _listed(p[0] for p in pairs), _listed(p[1] for p in pairs)


def _listed(ids: Iterable[str]) -> str:
    return ", ".join(repr(i) for i in ids)


def _canonical(text: str) -> str:
    """An id's value regardless of its type's spelling: '1.0', '001' and ' 1' are all '1'."""
    stripped = text.strip()
    try:
        number = Decimal(stripped)
    except InvalidOperation:
        return stripped.casefold()
    if not number.is_finite():
        return stripped.casefold()
    if number == number.to_integral_value():
        return str(int(number))
    return str(number.normalize())
