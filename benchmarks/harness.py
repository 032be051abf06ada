"""The benchmark's plumbing: an emulator in its own process, inputs, job files, child processes.

Everything talks to 127.0.0.1 only. Every process started here is stopped by its own pid.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pyarrow as pa
import pyarrow.csv as pacsv

MODEL = "gemini-2.5-flash"
API_KEY = "bench-key"
STATS_PATH = "/_emulator/stats"
POLL_SECONDS = 0.05
# One schema and one prompt for every contender: a small OBJECT, a prompt of ~100 tokens.
SCHEMA: dict[str, Any] = {
    "type": "OBJECT",
    "properties": {
        "title": {"type": "STRING"},
        "score": {"type": "INTEGER", "minimum": 1, "maximum": 5},
        "tags": {"type": "ARRAY", "items": {"type": "STRING"}},
    },
    "required": ["title", "score"],
    "propertyOrdering": ["title", "score", "tags"],
}
PROMPT = (
    "Write a short review title, a score from 1 to 5 and a few tags for this product. "
    "Product: {{ product }}. Category: {{ category }}. Notes: {{ notes }}"
)
# Equal lengths, so that every prompt has the same number of tokens (the token scenario
# converts the emulator's count of answers into tokens).
CATEGORIES = ("books", "tools", "music", "games", "shoes", "paint", "plant", "watch")
_WORDS = ("amber", "cedar", "delta", "ember", "fjord", "grove", "hazel", "ivory", "lemon")
NOTES_CHARS = 300


def render_prompt(product: str, category: str, notes: str) -> str:
    """The prompt text every contender sends for one row (what the job's template renders)."""
    return (
        PROMPT.replace("{{ product }}", product)
        .replace("{{ category }}", category)
        .replace("{{ notes }}", notes)
    )


def _notes(i: int) -> str:
    words = " ".join(_WORDS[(i * 7 + k) % len(_WORDS)] for k in range(NOTES_CHARS // 6 + 1))
    return words[:NOTES_CHARS]


def write_input(path: Path, rows: int) -> Path:
    """A CSV of ``rows`` rows: id, product, category, notes (written in Arrow-sized chunks)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    notes = [_notes(i) for i in range(len(_WORDS))]
    chunk = 100_000
    columns = ("id", "product", "category", "notes")
    with pacsv.CSVWriter(path, pa.schema([(c, pa.string()) for c in columns])) as writer:
        for start in range(0, rows, chunk):
            ids = range(start, min(rows, start + chunk))
            writer.write_table(
                pa.table(
                    {
                        "id": [f"r{i:08d}" for i in ids],
                        "product": [f"product {i:08d}" for i in ids],
                        "category": [CATEGORIES[i % len(CATEGORIES)] for i in ids],
                        "notes": [notes[i % len(notes)] for i in ids],
                    }
                )
            )
    return path


def prompt_of_row(i: int) -> str:
    """The prompt of row ``i`` of any input that write_input writes."""
    return render_prompt(f"product {i:08d}", CATEGORIES[i % len(CATEGORIES)], _notes(i % 9))


def write_job(
    folder: Path,
    input_path: Path,
    *,
    concurrency: int | None = 64,
    rpm: int = 1_000_000_000,
    tpm: int | None = None,
) -> Path:
    """A job file as a user would write it; the output goes to ``folder/out``.

    ``concurrency=None`` leaves the key out: the job's default.
    """
    folder.mkdir(parents=True, exist_ok=True)
    limits = f"requests_per_minute = {rpm}\n"
    if concurrency is not None:
        limits += f"concurrency = {concurrency}\n"
    if tpm is not None:
        limits += f"tokens_per_minute = {tpm}\n"
    (folder / "schema.json").write_text(json.dumps(SCHEMA, indent=2), encoding="utf-8")
    text = f"""name = "bench"
schema_file = "schema.json"

[input]
path = {json.dumps(str(input_path))}
id_column = "id"

[model]
name = "{MODEL}"

[prompt]
user = {json.dumps(PROMPT)}

[limits]
{limits}
[output]
directory = "out"
"""
    path = folder / "job.toml"
    path.write_text(text, encoding="utf-8")
    return path


# --- the emulator in its own process ------------------------------------------------------

_SERVE = (
    "import json, sys\n"
    "from batchgen.emulator import EmulatorConfig, serve\n"
    "serve(EmulatorConfig(**json.loads(sys.argv[1])), port=0)\n"
)


class EmulatorProcess:
    """The emulator (``batchgen.emulator.serve``) on a free port of 127.0.0.1; stopped by its pid.

    Started with ``python -c`` rather than ``python -m batchgen emulator`` so that it imports
    only the emulator, not the CLI and the runner it serves.
    """

    def __init__(
        self,
        latency_ms: float = 0.0,
        rpm: int | None = None,
        tpm: int | None = None,
        **more: float | None,
    ) -> None:
        """``more``: other EmulatorConfig fields (latency_median_ms, outage_after_s, ...)."""
        config = {"latency_ms": latency_ms, "rpm_limit": rpm, "tpm_limit": tpm, **more}
        self.args = [sys.executable, "-c", _SERVE, json.dumps(config)]
        self.proc: subprocess.Popen[str] | None = None
        self.base_url = ""
        self.port = 0

    def __enter__(self) -> EmulatorProcess:
        self.proc = subprocess.Popen(
            self.args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:(\d+)", line)
        if not match:
            self.stop()
            raise RuntimeError(f"the emulator did not start: {line!r}")
        self.base_url, self.port = match.group(0), int(match.group(1))
        self.ps = psutil.Process(self.proc.pid)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # serve() ends on KeyboardInterrupt
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.proc = None

    def cpu_seconds(self) -> float:
        times = self.ps.cpu_times()
        return times.user + times.system


@dataclass
class Sample:
    at: float  # time.monotonic()
    counts: dict[str, int]
    emulator_cpu: float
    client_cpu: float  # the watched child's CPU seconds (0 before it starts)
    client_rss: float  # and its resident memory, MB

    def since(self, earlier: Sample, key: str) -> int:
        """How much counts[key] grew from ``earlier`` to this sample."""
        return self.counts.get(key, 0) - earlier.counts.get(key, 0)


@dataclass
class Timeline:
    """The emulator's counts sampled every POLL_SECONDS while a contender runs."""

    samples: list[Sample] = field(default_factory=list)

    def at(self, when: float) -> Sample:
        """The last sample taken at or before ``when``."""
        best = self.samples[0]
        for s in self.samples:
            if s.at > when:
                break
            best = s
        return best


class Poller:
    """Samples the emulator's stats and CPU time in a thread, until stopped."""

    def __init__(self, emulator: EmulatorProcess, every: float = POLL_SECONDS) -> None:
        self.emulator = emulator
        self.every = every
        self.timeline = Timeline()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stats-poller", daemon=True)
        self._client: psutil.Process | None = None
        self._client_cpu = 0.0
        self._client_rss = 0.0
        self._http = http.client.HTTPConnection("127.0.0.1", emulator.port, timeout=10)

    def watch(self, pid: int) -> None:
        """Sample this process's CPU time too (the contender)."""
        self._client = psutil.Process(pid)

    def __enter__(self) -> Poller:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()
        self._http.close()

    def _sample(self) -> None:
        self._http.request("GET", STATS_PATH)
        counts = json.loads(self._http.getresponse().read())
        if self._client is not None:
            try:
                with self._client.oneshot():
                    times = self._client.cpu_times()
                    self._client_rss = self._client.memory_info().rss / 2**20
                self._client_cpu = times.user + times.system
            except psutil.Error:  # it has ended: its last figures stand
                self._client = None
        emulator_cpu = self.emulator.cpu_seconds()
        sample = Sample(time.monotonic(), counts, emulator_cpu, self._client_cpu, self._client_rss)
        self.timeline.samples.append(sample)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self._sample()

    def latest(self) -> Sample:
        return self.timeline.samples[-1]


# --- child processes ------------------------------------------------------------------------


@dataclass
class ChildResult:
    returncode: int
    wall: float
    peak_rss_mb: float
    cpu_seconds: float
    stdout: str
    stderr: str


def run_child(
    cmd: Sequence[str],
    *,
    cwd: Path,
    env: dict[str, str] | None = None,
    timeout: float = 600.0,
    stop_when: Callable[[], bool] | None = None,
    on_start: Callable[[int], None] | None = None,
) -> ChildResult:
    """Run a command to its end; its peak RSS (``VmHWM``) and its CPU time (``wait4``).

    The peak is the kernel's high-water mark of the child's own memory, read from
    /proc/PID/status every 20 ms while it runs (it only grows, so a spike between reads still
    counts). Not ``ru_maxrss``: Linux folds the high-water mark of the address space that
    ``exec`` replaces, the parent's, into the child's ``ru_maxrss``, so that figure is never
    below the benchmark's own peak.

    ``stop_when()`` is asked at every read; once it is true the child gets SIGTERM (batchgen's
    clean shutdown). After ``timeout`` seconds it gets SIGTERM, and SIGKILL 30 s later.
    ``on_start(pid)`` is called once it runs.
    """
    out_path, err_path = cwd / "child.stdout", cwd / "child.stderr"
    with out_path.open("w") as out, err_path.open("w") as err:
        proc = subprocess.Popen(list(cmd), cwd=cwd, env=env, stdout=out, stderr=err)
    started = time.monotonic()
    try:
        if on_start is not None:
            on_start(proc.pid)
        status, usage, peak_kib = _wait(proc, started, timeout, stop_when)
    except BaseException:  # Ctrl+C, a failing callback: never leave the child running
        if proc.returncode is None:
            proc.kill()
            proc.wait()
        raise
    wall = time.monotonic() - started
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
    return ChildResult(
        returncode=proc.returncode,
        wall=wall,
        peak_rss_mb=peak_kib / 1024,
        cpu_seconds=usage.ru_utime + usage.ru_stime,
        stdout=out_path.read_text(),
        stderr=err_path.read_text(),
    )


def _wait(
    proc: subprocess.Popen[bytes],
    started: float,
    timeout: float,
    stop_when: Callable[[], bool] | None,
) -> tuple[int, Any, int]:
    """Poll the child until it ends: (wait status, rusage, peak RSS in KiB).

    SIGTERM when due, SIGKILL 30 s after that.
    """
    termed_at: float | None = None
    killed = False
    peak_kib = 0
    status_file = Path(f"/proc/{proc.pid}/status")
    while True:
        peak_kib = max(peak_kib, _high_water_kib(status_file))
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            return status, usage, peak_kib
        now = time.monotonic()
        if termed_at is None:
            if now - started > timeout or (stop_when is not None and stop_when()):
                proc.send_signal(signal.SIGTERM)
                termed_at = now
        elif now - termed_at > 30 and not killed:
            proc.kill()  # not proc.poll(): that would reap the child before wait4 does
            killed = True
        time.sleep(0.02)


def _high_water_kib(status_file: Path) -> int:
    """VmHWM of a running process, in KiB (0 once it has exited: a zombie has none)."""
    try:
        for line in status_file.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def child_env() -> dict[str, str]:
    """The environment of every contender: the key that the emulator accepts."""
    env = dict(os.environ)
    env["GEMINI_API_KEY"] = API_KEY
    env.pop("PYTHONSTARTUP", None)
    return env


def batchgen_cmd(job: Path, base_url: str) -> list[str]:
    """``batchgen run`` as a user types it, pointed at the emulator."""
    return [sys.executable, "-m", "batchgen", "run", str(job), "--base-url", base_url]
