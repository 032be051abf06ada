"""What goes on the wire as it is given: the API key, the base URL, header values.

aiohttp refuses to send a header with a control character in it (``ValueError: Forbidden
control character``), and only when the first request is built, in a worker. A key copied from
a secrets file often ends with a newline; one that cannot be sent at all must stop the run
before the first call, with one line that names where it came from and never shows it.
"""

from __future__ import annotations

import re
import warnings

from batchgen.errors import BatchgenWarning, JobError

__all__ = ["checked_key", "unsendable"]

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_NAMES = {"\n": "a line break", "\r": "a carriage return", "\t": "a tab", "\x00": "a NUL byte"}


def unsendable(value: str, *, ascii_only: bool = False) -> str | None:
    """What in ``value`` cannot go in an HTTP header (its kind, never the value), or None.

    ``ascii_only``: refuse non-ASCII too, and spaces (an API key is printable ASCII; a
    non-breaking or zero-width space pasted along with it would only be refused by the API).
    """
    match = _CONTROL.search(value)
    if match is not None:
        char = match.group()
        return _NAMES.get(char, f"a control character (U+{ord(char):04X})")
    if ascii_only:
        for char in value:
            if char == " ":
                return "a space"
            if not char.isascii():
                return f"a non-ASCII character (U+{ord(char):04X})"
    return None


def checked_key(raw: str, source: str) -> str:
    """The key in ``raw`` with surrounding whitespace stripped (a :class:`BatchgenWarning`
    says so), or a :class:`JobError` naming ``source`` (``$GEMINI_API_KEY``, ``api_key=``)
    when what is left cannot be sent. The key itself is never in a message."""
    key = raw.strip()
    if key and key != raw:
        around = raw[: len(raw) - len(raw.lstrip())] + raw[len(raw.rstrip()) :]
        what = "a newline" if "\n" in around or "\r" in around else "whitespace"
        warnings.warn(
            f"{source}: the API key had {what} around it (a copy from a file?); it was stripped",
            BatchgenWarning,
            stacklevel=3,
        )
    problem = unsendable(key, ascii_only=True)
    if problem is not None:
        raise JobError(
            f"{source}: the API key holds {problem}, which cannot go in an HTTP header; "
            "set it to the key alone"
        )
    return key
