"""What media add to an estimate: their parts in a sampled request, their offline counts, and the
prompt's split by modality that prices audio at its own rate.

A row's media come as (MIME type, path or bytes) pairs (:data:`MediaOf` gives them per row).
With countTokens, the parts go into the counted request, so the API counts them (media
included, by modality); offline, :func:`batchgen.input.media_tokens.row_count` adds the published
rules' counts to the text's.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from batchgen.errors import InputError
from batchgen.input.media_tokens import MediaError, row_count
from batchgen.pricing.table import ModelPrice
from batchgen.records import MODALITIES, InputRow, TokenCount

__all__ = ["MediaOf", "MediaRefs", "modality_sums", "offline_count", "priced", "with_parts"]

MediaRefs = Sequence[tuple[str, Path | bytes]]
MediaOf = Callable[[InputRow], MediaRefs]


def with_parts(body: bytes, refs: MediaRefs) -> bytes:
    """A generateContent body with the row's media as ``inlineData`` parts before its text.

    For the sampled requests estimate counts when its caller names a row's media (``media=``);
    a job's own media columns are built by :meth:`batchgen.plan.Plan.sample_body`. Each file is
    read whole here, when its row is counted.
    """
    if not refs:
        return body
    request: dict[str, Any] = json.loads(body)
    parts = request["contents"][-1]["parts"]  # the row's turn, after any few-shot turns
    inline = [
        {"inlineData": {"mimeType": mime, "data": base64.b64encode(_bytes(source)).decode()}}
        for mime, source in refs
    ]
    request["contents"][-1]["parts"] = [*inline, *parts]
    return json.dumps(request, ensure_ascii=False, separators=(",", ":")).encode()


def offline_count(text_tokens: int, refs: MediaRefs, row_id: str) -> TokenCount:
    """A row's prompt offline: its text estimate plus its media by the published rules."""
    if not refs:
        return TokenCount(text_tokens)
    try:
        return row_count(text_tokens, refs)
    except MediaError as exc:
        raise InputError(f"row {row_id}: {exc}") from None


def priced(price: ModelPrice, count: TokenCount, output: int, tier: str) -> float:
    """One call's cost with this prompt: its audio (when split) at the audio rate."""
    audio = count.details.audio if count.details is not None else 0
    return price.cost(prompt=count.total, output=output, thinking=0, cached=0, tier=tier,
                      audio=audio)  # fmt: skip


def modality_sums(counts: Sequence[TokenCount], scale: float) -> dict[str, int]:
    """Prompt tokens by modality over the input (``counts`` scaled), when any count is split;
    ``unsplit`` holds the tokens of counts without a split."""
    split = [c.details for c in counts if c.details is not None]
    if not split:
        return {}
    sums: Mapping[str, int] = {m: sum(getattr(d, m) for d in split) for m in MODALITIES}
    unsplit = sum(c.total for c in counts if c.details is None)
    return {**{m: round(n * scale) for m, n in sums.items()}, "unsplit": round(unsplit * scale)}


def _bytes(source: Path | bytes) -> bytes:
    if isinstance(source, bytes):
        return source
    try:
        return source.read_bytes()
    except OSError as exc:
        raise InputError(f"{source}: cannot read ({exc.strerror})") from None
