"""What the input formats share."""

from __future__ import annotations


def one_line(exc: BaseException) -> str:
    """An exception's message on one line (pyarrow's span several)."""
    text = getattr(exc, "strerror", None) if isinstance(exc, OSError) else None
    return " ".join((text or str(exc) or type(exc).__name__).split())
