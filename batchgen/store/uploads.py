"""``OUTPUT/uploads.jsonl``: the media contents uploaded to the Files API, by content hash.

One fsynced line per upload (``sha256``, ``name``, ``uri``, ``mime``, ``size``, ``expires``)
and one per file found gone (``gone``: the name), appended and never rewritten. A later run
reads it back and names a content's file instead of uploading it again, while the file lives
(the API keeps an upload 48 hours; one that expires within ``MARGIN`` is treated as gone, so a
request never names a file that dies before it is read). A line cut short by a kill is skipped;
a newer format is refused.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from batchgen.atomic import fsync_dir
from batchgen.errors import CheckpointError
from batchgen.store.files import open_append

UPLOADS_FILE = "uploads.jsonl"
FORMAT = 1
LIFETIME = timedelta(hours=48)  # how long the Files API keeps an upload
MARGIN = timedelta(hours=1)  # an upload this close to its expiry is uploaded again


@dataclass(frozen=True)
class Uploaded:
    """One content held by the Files API."""

    sha256: str
    name: str  # files/<id>
    uri: str
    mime: str
    size: int
    expires: datetime


class UploadRegistry:
    """The uploads of one output directory (reading and appending need the output's lock)."""

    def __init__(self, output: Path) -> None:
        self.output = output
        self.path = output / UPLOADS_FILE
        self._known: dict[str, Uploaded] = {}
        self._read()

    def live(self, sha256: str, now: datetime | None = None) -> Uploaded | None:
        """The content's upload, if it lives beyond the margin."""
        found = self._known.get(sha256)
        if found is None:
            return None
        if found.expires - MARGIN <= (now or datetime.now(UTC)):
            return None
        return found

    def add(self, entry: Uploaded) -> None:
        """Record an upload (fsynced before the caller names it in a request)."""
        self._append({"sha256": entry.sha256, "name": entry.name, "uri": entry.uri,
                      "mime": entry.mime, "size": entry.size,
                      "expires": entry.expires.isoformat()})  # fmt: skip
        self._known[entry.sha256] = entry

    def gone(self, name: str) -> list[str]:
        """Forget the upload named ``name`` (the API said 403/404 for it); the hashes dropped."""
        dropped = [sha for sha, entry in self._known.items() if entry.name == name]
        if dropped:
            self._append({"gone": name})
            for sha in dropped:
                del self._known[sha]
        return dropped

    def names(self) -> set[str]:
        return {entry.name for entry in self._known.values()}

    def __len__(self) -> int:
        return len(self._known)

    def _read(self) -> None:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return
        except OSError as exc:
            raise CheckpointError(f"{self.path}: cannot read ({exc.strerror})") from None
        for raw in text.splitlines():
            with contextlib.suppress(ValueError, KeyError, TypeError):  # a line cut by a kill
                line = json.loads(raw)
                self._take(line)

    def _take(self, line: dict[str, Any]) -> None:
        if line.get("format", 1) != FORMAT:
            raise CheckpointError(
                f"{self.path}: written in uploads format {line['format']} (this batchgen reads "
                f"{FORMAT}); upgrade batchgen or use another output directory"
            )
        if "gone" in line:
            for sha in [s for s, e in self._known.items() if e.name == line["gone"]]:
                del self._known[sha]
            return
        expires = datetime.fromisoformat(line["expires"])
        self._known[line["sha256"]] = Uploaded(
            line["sha256"], line["name"], line["uri"], line["mime"], int(line["size"]), expires
        )

    def _append(self, line: dict[str, Any]) -> None:
        try:
            new = not self.path.exists()
            self.output.mkdir(parents=True, exist_ok=True)
            with os.fdopen(open_append(self.path), "a", encoding="utf-8") as f:
                f.write(json.dumps({"format": FORMAT, **line}, ensure_ascii=False) + "\n")
                f.flush()
                os.fsync(f.fileno())
            if new:
                fsync_dir(self.output)
        except OSError as exc:
            raise CheckpointError(f"{self.path}: cannot write ({exc.strerror})") from None
