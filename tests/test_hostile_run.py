"""Run-level behaviour with a hostile server: stops that say why, secrets kept, a heartbeat."""

from __future__ import annotations

import io
import json
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from click.testing import CliRunner

from batchgen.cli import main
from batchgen.cli.progress import LineProgress
from batchgen.emulator import EmulatorConfig, EmulatorThread
from batchgen.emulator.hostile import HostileConfig
from batchgen.job.spec import Overrides, load_job
from batchgen.run.runner import RunOptions, run_job
from tests.helpers.hostile import KEY, assert_every_row_accounted_for, make_job
from tests.helpers.outputs import read_rows


def test_every_call_redirected_stops_the_run_and_says_where(tmp_path: Path) -> None:
    path = make_job(tmp_path, 60, concurrency=2)
    hostile = HostileConfig(redirect_to="http://127.0.0.2:9")
    config = EmulatorConfig(fault_rates={"redirect_302": 1.0}, hostile=hostile)
    with EmulatorThread(config) as near:
        result = CliRunner().invoke(
            main, ["run", str(path), "--base-url", near.base_url], env={"GEMINI_API_KEY": KEY}
        )
        calls = near.emulator.counts["generateContent"]
    assert result.exit_code == 4, result.output
    line = result.stderr.splitlines()[-1]  # after the progress output, one error line
    assert (
        line.startswith("error: ")
        and "redirected elsewhere (20 calls in a row failed: HTTP 302 redirect to 127.0.0.2:9"
        in line
    )
    assert calls < 30  # it stopped; it did not try all 60 rows
    assert "rows remain: rerun the same command" in result.stdout


def test_a_base_url_with_credentials_is_redacted_in_messages_and_records(tmp_path: Path) -> None:
    path = make_job(tmp_path, 30, concurrency=2, timeout=1, attempts=1)
    url = "http://someone:s3cr3t-pass@127.0.0.1:9"  # nothing listens on port 9
    result = CliRunner().invoke(
        main, ["run", str(path), "--base-url", url], env={"GEMINI_API_KEY": KEY}
    )
    assert result.exit_code == 4, result.output
    assert "unreachable" in result.stderr and "***@127.0.0.1:9" in result.stderr
    everything = result.output + "".join(
        p.read_text(errors="replace") for p in (tmp_path / "out").rglob("*") if p.is_file()
    )
    assert "s3cr3t-pass" not in everything and KEY not in everything
    records = [
        json.loads(line) for line in (tmp_path / "out" / "runs.jsonl").read_text().splitlines()
    ]
    assert records[-1]["stopped_by"] == "unreachable" and records[-1]["rows_remaining"] > 0


def test_progress_lines_come_while_nothing_completes_and_say_the_server_wait(
    tmp_path: Path,
) -> None:
    path = make_job(tmp_path, 4, concurrency=4, max_delay=1.5)
    stream = io.StringIO()
    config = EmulatorConfig(script={"item-002": ["delay_429"]})
    with EmulatorThread(config) as server:
        job = load_job(path, Overrides(base_url=server.base_url))
        summary = run_job(job, RunOptions(api_key=KEY, progress=LineProgress(0.2, stream=stream)))
    assert summary.exit_code == 0
    lines = stream.getvalue().splitlines()
    waiting = [line for line in lines if "waiting 2 s: the server asked for 3600 s" in line]
    assert len(lines) >= 4 and waiting, lines  # lines every 0.2 s while the run waits
    assert "capped by retry.max_server_delay_seconds" in waiting[0]
    assert_every_row_accounted_for(job, 4)


def test_a_server_that_is_not_gemini_gets_one_line_per_failure(tmp_path: Path) -> None:
    # Python's own http.server, not our emulator: it answers a POST with an HTML 501 page.
    server = ThreadingHTTPServer(("127.0.0.1", 0), SimpleHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        path = make_job(tmp_path, 3, concurrency=1)
        url = f"http://127.0.0.1:{server.server_address[1]}"
        result = CliRunner().invoke(
            main, ["run", str(path), "--base-url", url], env={"GEMINI_API_KEY": KEY}
        )
    finally:
        server.shutdown()
        server.server_close()
    assert result.exit_code == 1, result.output
    (line,) = [x for x in result.stdout.splitlines() if x.startswith("  server:")]
    assert "HTTP 501:" in line and "Unsupported method" in line and "<" not in line
    assert line.endswith("(not a Gemini error: is model.base_url the API?)")
    messages = [r["message"] for r in read_rows(tmp_path / "out", "errors")]
    assert len(messages) == 3 and all("\n" not in m and len(m) < 400 for m in messages)
