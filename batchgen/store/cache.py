"""The record in OUTPUT of the run's context cache: ``OUTPUT/cache.json``.

Written (whole, through :func:`batchgen.atomic.write_bytes_atomically`: a temporary file opened
with O_NOFOLLOW, fsynced, renamed over the old one) right after the cache is created and before
any request names it; removed once the cache is deleted. So a run killed while its cache lives
leaves the name here, and the next run reuses the cache (same prefix, still alive) or deletes it:
a cache is never left billing storage unknown. The record carries its format.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from batchgen.atomic import fsync_dir, write_bytes_atomically

__all__ = ["CACHE_FILE", "CacheRecord", "drop_cache_record", "read_cache_record",
           "write_cache_record"]  # fmt: skip

CACHE_FILE = "cache.json"
FORMAT = 1


@dataclass(frozen=True)
class CacheRecord:
    """A live cache of this output: its name, the prefix it holds (digest), its tokens, the
    model, when it was created (UTC, RFC 3339) and the run that made it."""

    name: str
    digest: str
    tokens: int
    model: str
    created_at: str
    run_id: str


def write_cache_record(output: Path, record: CacheRecord) -> None:
    data = json.dumps({"format": FORMAT, **asdict(record)}).encode()
    write_bytes_atomically(output / CACHE_FILE, data)


def read_cache_record(output: Path) -> CacheRecord | None:
    """The recorded cache, or None (no record, a symlink, or a record this version cannot
    read: a cache only this code could have made is then not ours to touch)."""
    path = output / CACHE_FILE
    if path.is_symlink() or not path.is_file():
        return None
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        if raw.pop("format", None) != FORMAT:
            return None
        return CacheRecord(**raw)
    except (OSError, ValueError, TypeError):
        return None


def drop_cache_record(output: Path) -> None:
    path = output / CACHE_FILE
    if path.exists() or path.is_symlink():
        path.unlink()
        fsync_dir(output)
