"""Jobs whose rows share a long system instruction: the cacheable prefix of the context-cache
tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.helpers.jobs import item_job

# ~12k tokens by the emulator's rule (four characters a token), the same for every row
SYSTEM = "You label household things carefully and briefly, one label each. " * 730
FAST = {"requests_per_minute": 1_000_000, "concurrency": 16}


def cached_job(
    folder: Path, rows: int, mode: str = "auto", system: str = SYSTEM, **sections: Any
) -> Path:
    """``rows`` rows whose requests share ``system`` (the cacheable prefix); ``sections`` as
    for ``item_job`` (limits default to FAST)."""
    sections.setdefault("limits", FAST)
    path = item_job(folder, rows, cache={"mode": mode}, **sections)
    line = f"system = {json.dumps(system)}\n"
    path.write_text(path.read_text().replace("[prompt]\n", "[prompt]\n" + line, 1))
    return path
