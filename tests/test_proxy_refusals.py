"""A run through an aggregator proxy (LiteLLM and the like) that refuses or fails every call.

The stand-ins here are small HTTP servers that answer as such a proxy does: its own error for a
key it does not know, a 500 while the API behind it is down, a Files API start without the
upload headers. Each test checks what the user reads and what stays for the next run.
"""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from batchgen.backends.online.breaker import Breaker
from batchgen.backends.stopping import RefusalWatch, StopControl
from batchgen.cli import main
from batchgen.cli.progress import LineProgress
from batchgen.emulator import EmulatorConfig, EmulatorThread
from batchgen.errors import FatalApiError, RunStoppedError
from batchgen.job.spec import Overrides, load_job
from batchgen.records import Outage
from batchgen.run.progress import Snapshot
from batchgen.run.runner import RunOptions, run_job
from tests.helpers.jobs import item_job

KEY = "proxy-test-key-0123456789"
NO_DB = {"error": {"code": 400, "message": "No connected db.", "status": "INVALID_ARGUMENT"}}

Answer = Callable[[str, bytes], tuple[int, dict[str, Any], dict[str, str]]]


def make_job(folder: Path, rows: int, concurrency: int = 2, outage_minutes: float = 10) -> Path:
    return item_job(
        folder, rows,
        limits={"concurrency": concurrency, "requests_per_minute": 1_000_000,
                "timeout_seconds": 5},
        retry={"attempts": 2, "backoff_initial_seconds": 0.01, "backoff_max_seconds": 0.05,
               "outage_minutes": outage_minutes},
        output={"flush_seconds": 0.2},
    )  # fmt: skip


@contextmanager
def stub_proxy(answer: Answer) -> Iterator[tuple[str, list[str]]]:
    """A proxy on 127.0.0.1 answering every request with ``answer(path, body)``; yields its
    base URL and the paths it was asked for."""
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def _any(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            seen.append(self.path)
            status, payload, headers = answer(self.path, body)
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_DELETE = _any  # noqa: N815

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


def runs(folder: Path) -> list[dict[str, Any]]:
    text = (folder / "out" / "runs.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines()]


def test_the_proxy_refusing_every_call_stops_the_run_and_names_the_proxy(tmp_path: Path) -> None:
    path = make_job(tmp_path, 200, concurrency=2)
    with stub_proxy(lambda _path, _body: (400, NO_DB, {})) as (url, seen):
        result = CliRunner().invoke(
            main, ["run", str(path), "--base-url", url], env={"GEMINI_API_KEY": KEY}
        )
    assert result.exit_code == 3, result.output
    line = result.stderr.splitlines()[-1]
    assert line.startswith("error: ") and "HTTP 400: No connected db." in line
    assert "is a proxy" in line and "the proxy's" in line
    assert len(seen) < 40  # it stopped after about twenty calls, not one per row
    record = runs(tmp_path)[-1]
    assert record["stopped_by"] == "refused" and record["exit_code"] == 3
    assert record["rows_remaining"] >= 150  # the rows never sent stay for the next run


def test_a_400_that_only_some_rows_get_is_data(tmp_path: Path) -> None:
    path = make_job(tmp_path, 60, concurrency=2)
    answer = {"candidates": [{"content": {"parts": [{"text": '{"label": "ok"}'}]}}],
              "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 3,
                                "totalTokenCount": 8}}  # fmt: skip
    calls = [0]

    def every_other(_path: str, _body: bytes) -> tuple[int, dict[str, Any], dict[str, str]]:
        calls[0] += 1
        return (400, NO_DB, {}) if calls[0] % 2 else (200, answer, {})

    with stub_proxy(every_other) as (url, _seen):
        result = CliRunner().invoke(
            main, ["run", str(path), "--base-url", url], env={"GEMINI_API_KEY": KEY}
        )
    assert result.exit_code == 1, result.output  # some rows failed; none stopped the run
    record = runs(tmp_path)[-1]
    assert record["stopped_by"] is None and record["rows_remaining"] == 0


def test_refusals_after_a_first_answer_are_the_rows_own(tmp_path: Path) -> None:
    # a run of rows that the API refuses alike (oversized, say) after others were answered is
    # data: stopping would only meet the same rows again on every rerun
    path = make_job(tmp_path, 60, concurrency=1)
    answer = {"candidates": [{"content": {"parts": [{"text": '{"label": "ok"}'}]}}],
              "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 3,
                                "totalTokenCount": 8}}  # fmt: skip
    calls = [0]

    def first_then_refused(_path: str, _body: bytes) -> tuple[int, dict[str, Any], dict[str, str]]:
        calls[0] += 1
        return (200, answer, {}) if calls[0] == 1 else (400, NO_DB, {})

    with stub_proxy(first_then_refused) as (url, _seen):
        result = CliRunner().invoke(
            main, ["run", str(path), "--base-url", url], env={"GEMINI_API_KEY": KEY}
        )
    assert result.exit_code == 1, result.output
    record = runs(tmp_path)[-1]
    assert record["stopped_by"] is None and record["rows_remaining"] == 0


def test_progress_says_the_outage_while_the_breaker_is_open(tmp_path: Path) -> None:
    down = {"error": {"code": 500, "message": "Cannot connect to host upstream:443"}}
    path = make_job(tmp_path, 40, concurrency=2, outage_minutes=0.1)  # six seconds
    stream = io.StringIO()
    with stub_proxy(lambda _path, _body: (500, down, {})) as (url, _seen):
        job = load_job(path, Overrides(base_url=url))
        progress = LineProgress(0.2, as_json=True, stream=stream)
        with pytest.raises(RunStoppedError) as stopped:
            run_job(job, RunOptions(api_key=KEY, progress=progress))
    assert "every call failed server-side" in str(stopped.value)
    records = [json.loads(line) for line in stream.getvalue().splitlines()]
    outages = [r["outage"] for r in records if "outage" in r]
    assert outages, records  # while the breaker was open, progress said so
    last = outages[-1]
    assert "Cannot connect to host upstream:443" in last["last_error"]
    assert last["note"].startswith("outage: every call failing since ")
    assert all(r["eta_s"] is None for r in records if "outage" in r)
    assert runs(tmp_path)[-1]["stopped_by"] == "outage"


def test_the_text_progress_line_says_the_outage() -> None:
    since = datetime.now(UTC) - timedelta(seconds=75)
    outage = Outage(since, "HTTP 500: Cannot connect to host upstream:443", 12.0, 3)
    snap = Snapshot(100, 0, 0, 0, None, 80.0, outage=outage)
    stream = io.StringIO()
    LineProgress(60, stream=stream).close(snap)
    line = stream.getvalue()
    assert f"outage: every call failing since {since:%H:%M:%S} UTC (1m15s, 3 probes)" in line
    assert "last error: HTTP 500: Cannot connect to host upstream:443" in line
    assert "next probe in 0m12s" in line and "ETA" not in line


def test_the_breaker_shows_its_outage_only_while_open() -> None:
    now = [100.0]
    breaker = Breaker(outage_minutes=10, clock=lambda: now[0])
    assert breaker.showing() is None
    for _ in range(10):
        breaker.note("HTTP 500: upstream down")
        breaker.record(False, True)
    now[0] += 2.0
    shown = breaker.showing()
    assert shown is not None and shown.last_error == "HTTP 500: upstream down"
    assert shown.next_probe_s == 3.0 and shown.probes == 0
    breaker.record(True, False)
    assert breaker.showing() is None


def test_batch_mode_through_a_proxy_without_the_files_api_says_so(tmp_path: Path) -> None:
    path = make_job(tmp_path, 6)
    # LiteLLM answers the upload start but drops the X-Goog-Upload-* headers
    with stub_proxy(lambda _path, _body: (200, {}, {})) as (url, seen):
        result = CliRunner().invoke(
            main,
            ["run", str(path), "--tier", "batch", "--base-url", url],
            env={"GEMINI_API_KEY": KEY},
        )
    assert result.exit_code == 3, result.output
    line = result.stderr.splitlines()[-1]
    assert "does not relay the Files API" in line and "X-Goog-Upload-URL" in line
    assert "--tier flex" in line and "https://generativelanguage.googleapis.com" in line
    assert not any(":batchGenerateContent" in p for p in seen)  # nothing was submitted
    record = runs(tmp_path)[-1]
    assert record["exit_code"] == 3 and record["rows_remaining"] == 6


def test_batch_mode_through_a_proxy_without_the_upload_route_says_so(tmp_path: Path) -> None:
    path = make_job(tmp_path, 6)
    missing = {"error": {"code": 404, "message": "Not Found"}}

    def no_files(path: str, _body: bytes) -> tuple[int, dict[str, Any], dict[str, str]]:
        return (404, missing, {}) if path.startswith("/upload/") else (200, {}, {})

    with stub_proxy(no_files) as (url, _seen):
        result = CliRunner().invoke(
            main,
            ["run", str(path), "--tier", "batch", "--base-url", url],
            env={"GEMINI_API_KEY": KEY},
        )
    assert result.exit_code == 3, result.output
    line = result.stderr.splitlines()[-1]
    assert "does not relay the Files API" in line and "HTTP 404" in line
    assert "--tier flex" in line and "unknown model" not in line


def test_estimate_tier_batch_finds_a_proxy_without_the_files_api(tmp_path: Path) -> None:
    path = make_job(tmp_path, 6)
    with stub_proxy(lambda _path, _body: (200, {"totalTokens": 7}, {})) as (url, seen):
        result = CliRunner().invoke(
            main,
            ["estimate", str(path), "--tier", "batch", "--base-url", url],
            env={"GEMINI_API_KEY": KEY},
        )
    assert result.exit_code == 3, result.output
    line = result.stderr.splitlines()[-1]
    assert "does not relay the Files API" in line and "--tier flex" in line
    assert seen == ["/upload/v1beta/files"]  # the probe went first, and alone


def test_estimate_tier_batch_through_the_api_itself_goes_on(tmp_path: Path) -> None:
    path = make_job(tmp_path, 6)
    with EmulatorThread(EmulatorConfig()) as server:
        result = CliRunner().invoke(
            main,
            ["estimate", str(path), "--tier", "batch", "--base-url", server.base_url],
            env={"GEMINI_API_KEY": KEY},
        )
        counts = dict(server.emulator.counts)
    assert result.exit_code == 0, result.output
    assert counts.get("upload_start") == 1 and not counts.get("upload_finalize")  # no file


async def test_the_refusal_names_a_proxy_only_when_the_base_url_is_not_googles(
    tmp_path: Path,
) -> None:
    for base, proxy in (("https://generativelanguage.googleapis.com", False),
                        ("https://llm.example.com", True)):  # fmt: skip
        stop = StopControl(tmp_path, grace=1.0)
        watch = RefusalWatch(stop, base, base, after=3)
        for status, message in ((400, "a"), (400, "b"), (400, "b"), (None, None), (400, "b")):
            watch.saw(status, message)  # a new message, or an answer, starts the count again
        watch.saw(429, "slow down")  # a 429 is the rate limiter's, not a refusal
        assert stop.reason is None
        for _ in range(3):
            watch.saw(400, "HTTP 400: No connected db.")
        assert isinstance(stop.reason, FatalApiError) and stop.by == "refused"
        assert "(HTTP 400: No connected db.)" in str(stop.reason)
        assert ("is a proxy" in str(stop.reason)) is proxy
    # once a call is answered, the same refusal on many rows is theirs: the watch stands down
    stop = StopControl(tmp_path, grace=1.0)
    watch = RefusalWatch(stop, "https://llm.example.com", "llm", after=3)
    watch.answered()
    for _ in range(10):
        watch.saw(400, "HTTP 400: payload too large")
    assert stop.reason is None
