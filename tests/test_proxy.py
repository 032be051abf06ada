"""A run through an aggregator proxy (LiteLLM and the like) that refuses or fails every call.

The stand-ins here are small HTTP servers that answer as such a proxy does: its own error for a
key it does not know, a 500 while the API behind it is down, a Files API start without the
upload headers. Each test checks what the user reads and what stays for the next run.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from batchgen.cli import main
from tests.conftest import write_job

KEY = "proxy-test-key-0123456789"
NO_DB = {"error": {"code": 400, "message": "No connected db.", "status": "INVALID_ARGUMENT"}}
JOB = """
    [input]
    path = "rows.csv"
    id_column = "id"

    [model]
    name = "gemini-2.5-flash-lite"

    [prompt]
    user = "Describe {{{{ name }}}} in a few words."

    [response_schema]
    type = "OBJECT"
    required = ["label"]
    properties = {{ label = {{ type = "STRING" }} }}

    [limits]
    concurrency = {concurrency}
    requests_per_minute = 1000000
    timeout_seconds = 5

    [retry]
    attempts = 2
    backoff_initial_seconds = 0.01
    backoff_max_seconds = 0.05
    outage_minutes = {outage_minutes}

    [output]
    directory = "out"
    flush_seconds = 0.2
"""

Answer = Callable[[str, bytes], tuple[int, dict[str, Any], dict[str, str]]]


def make_job(folder: Path, rows: int, concurrency: int = 2, outage_minutes: float = 10) -> Path:
    with (folder / "rows.csv").open("w") as f:
        f.write("id,name\n")
        f.writelines(f"r{i},item-{i:03d}\n" for i in range(rows))
    return write_job(folder, JOB.format(concurrency=concurrency, outage_minutes=outage_minutes))


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
