"""The separate stand-in server (benchmarks/standin_savers.py) in a child process."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from tests.helpers.paths import ROOT

SCRIPT = ROOT / "benchmarks" / "standin_savers.py"
KEY = "standin-key"


@dataclass
class Standin:
    base_url: str

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.base_url + "/_standin/stats", timeout=10) as r:
            stats: dict[str, Any] = json.loads(r.read())
        return stats

    def expire_caches(self) -> None:
        """Every cache ends now (403 on its next use), as an expired one does."""
        request = urllib.request.Request(self.base_url + "/_standin/expire", method="POST")
        with urllib.request.urlopen(request, timeout=10):
            pass


@contextmanager
def standin(latency: str = "0.05,0.2", rpm: int = 10_000) -> Iterator[Standin]:
    """The stand-in on 127.0.0.1 while the block runs."""
    args = [sys.executable, str(SCRIPT), "--latency", latency, "--rpm", str(rpm), "--key", KEY]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.match(r"http://127\.0\.0\.1:\d+", line)
        if match is None:
            raise RuntimeError(f"the stand-in did not start: {line!r}")
        yield Standin(match.group(0))
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()
