"""Issue 20's last hostile edges: the CLI's own exits, advice that fits, the SDK's key variable,
status during a run, empty prompts, damaged parts in one line, DataFrame template errors."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import batchgen
from batchgen.cli import main
from batchgen.emulator import EmulatorConfig, EmulatorThread
from batchgen.errors import OFFLINE, CheckpointError, InputError, JobError
from batchgen.gemini.answers import AnswerError, structured_value
from batchgen.job.schema import AnswerValidator, normalize_schema
from batchgen.job.spec import Overrides, load_job
from batchgen.records import Answer, Usage
from batchgen.reports.report import report
from batchgen.reports.status import output_status
from batchgen.run.runner import RunOptions, run_job
from batchgen.store.layout import part_files
from tests.helpers.emulator_calls import StartEmulator
from tests.helpers.paths import write_job

KEY = "edges-key-2020"
JOB = """
    [input]
    path = "rows.csv"
    id_column = "id"

    [model]
    name = "gemini-2.5-flash-lite"

    [prompt]
    user = "{{{{ review }}}}"

    [response_schema]
    type = "OBJECT"
    required = ["label"]
    properties = {{ label = {{ type = "STRING" }} }}

    [output]
    directory = "out"
    {extra}
"""


@pytest.fixture
def emulator(emulator_factory: StartEmulator) -> EmulatorThread:
    return emulator_factory(EmulatorConfig(api_keys=frozenset({KEY}), record=True))


def invoke(args: list[str], **env: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, args, env={"GEMINI_API_KEY": KEY, **env})
    return result.exit_code, result.stdout, result.stderr


def read_dir(directory: Path, kind: str) -> pa.Table:
    return pa.concat_tables([pq.read_table(p) for p in part_files(directory, kind)])


# --- 5. an empty prompt is a template failure, never sent ---------------------------------


def test_an_empty_prompt_is_a_template_failure_and_costs_no_call(
    tmp_path: Path, emulator: EmulatorThread
) -> None:
    (tmp_path / "rows.csv").write_text('id,review\nr1,good\nr2,""\nr3,"   "\nr4,fine\n')
    job = write_job(tmp_path, JOB.format(extra=""))

    code, out, err = invoke(["run", str(job), "--base-url", emulator.base_url])

    assert code == 1, out + err
    assert emulator.emulator.counts["generateContent"] == 2  # r1 and r4 only
    errors = read_dir(tmp_path / "out", "errors")
    assert sorted(errors.column("row_id").to_pylist()) == ["r2", "r3"]
    assert set(errors.column("category").to_pylist()) == {"template"}
    assert "row r2: the prompt is empty (blank 'review'); nothing was sent" in out


# --- 7. a DataFrame's missing column is named as the DataFrame's --------------------------


def test_a_dataframe_without_the_prompts_column_is_named_as_the_dataframe(
    emulator: EmulatorThread,
) -> None:
    frame = pd.DataFrame({"product": ["kettle"], "review": ["fine"]})
    schema = {"type": "OBJECT", "properties": {"label": {"type": "STRING"}}}
    common: dict[str, Any] = {"schema": schema, "model": "gemini-2.5-flash-lite", "api_key": KEY,
                              "base_url": emulator.base_url}  # fmt: skip

    with pytest.raises(InputError) as info:
        batchgen.generate(frame, prompt="Judge {{ missing }}", **common)
    assert str(info.value) == (
        "the DataFrame has no column 'missing' (used in the prompt; it has: product, review)"
    )
    with pytest.raises(InputError, match=r"\(carry=; it has: product, review\); did you"):
        batchgen.generate(frame, prompt="{{ review }}", carry=["Product"], **common)
    assert emulator.emulator.counts["generateContent"] == 0


# --- 6. a damaged results part is one line --------------------------------------------------


@pytest.mark.parametrize("command", ["status", "run"])
def test_a_damaged_results_part_is_one_line(
    tmp_path: Path, emulator: EmulatorThread, command: str
) -> None:
    (tmp_path / "rows.csv").write_text("id,review\nr1,good\nr2,bad\n")
    job = write_job(tmp_path, JOB.format(extra=""))
    url = ["--base-url", emulator.base_url]
    assert invoke(["run", str(job), *url])[0] == 0
    (part,) = part_files(tmp_path / "out", "results")
    data = bytearray(part.read_bytes())
    data[4] ^= 0xFF  # the first page header: pyarrow's message spans three lines
    part.write_bytes(bytes(data))

    args = ["status", str(tmp_path / "out")] if command == "status" else ["run", str(job), *url]
    code, out, err = invoke(args)

    assert code == 2, out + err
    assert err.count("\n") == 1 and err.startswith(f"error: {part}: unreadable part file ("), err
    assert err.rstrip().endswith("); move it out of the output and rerun"), err
    assert all(c.isprintable() for c in err.rstrip("\n")), err


# --- 1. the CLI's own exits -----------------------------------------------------------------


@pytest.mark.parametrize("command", [[], *([name] for name in sorted(main.commands))])
def test_every_commands_help_exits_0(command: list[str]) -> None:
    code, out, err = invoke([*command, "--help"])
    assert code == 0, out + err
    assert out.startswith("Usage: ") and "internal error" not in out + err and not err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run"], "Missing argument 'JOB_FILE'."),
        (["status"], "Missing argument 'OUTPUT'."),
        (["run", "job.toml", "--tier", "bogus"], "Invalid value for '--tier': 'bogus' is not"),
        (["estimate", "job.toml", "--format", "xml"], "Invalid value for '--format': 'xml'"),
        (["bogus"], "No such command 'bogus'."),
        (["run", "job.toml", "--limit", "0"], "Invalid value for '--limit': 0 is not in the range"),
        (["estimate", "job.toml", "--sample", "0"], "Invalid value for '--sample': 0 is not in"),
        (["run", "job.toml", "--no-such-option"], "No such option"),
    ],
)
def test_usage_errors_exit_2_with_clicks_message(args: list[str], message: str) -> None:
    code, out, err = invoke(args)
    assert code == 2, out + err
    assert f"Error: {message}" in err and "internal error" not in err, err


def test_the_installed_entry_point_exits_as_click_does() -> None:
    entry = [sys.executable, "-c", "from batchgen._entry import main; main()"]
    done = subprocess.run([*entry, "run", "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.startswith("Usage: ") and not done.stderr
    done = subprocess.run([*entry, "run", "j.toml", "--limit", "0"], capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert done.returncode == 2 and "Invalid value for '--limit'" in done.stderr


# --- 3. the key in $GOOGLE_API_KEY, as google-genai reads it --------------------------------


def key_job(folder: Path, extra: str = "") -> Path:
    (folder / "rows.csv").write_text("id,review\nr1,good\n")
    return write_job(folder, JOB.format(extra="").replace("[model]\n", f"[model]\n{extra}"))


def test_the_sdks_google_api_key_is_read_and_wins_with_a_warning(
    tmp_path: Path, emulator: EmulatorThread
) -> None:
    job, url = key_job(tmp_path), ["--base-url", emulator.base_url, "--quiet"]
    run = CliRunner().invoke(main, ["run", str(job), *url], env={"GOOGLE_API_KEY": KEY})
    assert run.exit_code == 0, run.output
    assert not run.stderr

    both = {"GOOGLE_API_KEY": KEY, "GEMINI_API_KEY": "another-key-99"}
    run = CliRunner().invoke(main, ["run", str(job), *url, "--fresh"], env=both)
    assert run.exit_code == 0, run.output  # the emulator takes only KEY: GOOGLE_API_KEY's
    assert run.stderr == (
        "warning: both $GOOGLE_API_KEY and $GEMINI_API_KEY are set: using $GOOGLE_API_KEY, as "
        "google-genai does (model.api_key_env names the one to use)\n"
    )
    assert KEY not in run.output and "another-key-99" not in run.output

    validate = CliRunner().invoke(main, ["validate", str(job)], env={"GOOGLE_API_KEY": KEY})
    assert "(key from $GOOGLE_API_KEY)" in validate.stdout


def test_a_job_naming_its_variable_reads_only_that_one(tmp_path: Path) -> None:
    job = key_job(tmp_path, 'api_key_env = "GEMINI_API_KEY"\n')
    run = CliRunner().invoke(main, ["run", str(job)], env={"GOOGLE_API_KEY": KEY})
    assert run.exit_code == 2
    assert run.stderr == (
        f"error: {job}: no API key: set $GEMINI_API_KEY or $GOOGLE_API_KEY (model.api_key_env), "
        "or use --emulator to run offline\n"
    )


def test_generate_reads_google_api_key(
    emulator: EmulatorThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GOOGLE_API_KEY", KEY)
    schema = {"type": "OBJECT", "properties": {"label": {"type": "STRING"}}}
    frame = batchgen.generate(
        [{"review": "fine"}], prompt="{{ review }}", schema=schema,
        model="gemini-2.5-flash-lite", base_url=emulator.base_url,
    )  # fmt: skip
    assert frame["status"].tolist() == ["ok"]


# --- 4. status while a run is going ---------------------------------------------------------


def test_status_during_a_run_says_it_is_running_and_after_a_kill_that_it_did_not_finish(
    tmp_path: Path,
) -> None:
    rows = "".join(f"r{i},review {i}\n" for i in range(40))
    (tmp_path / "rows.csv").write_text("id,review\n" + rows)
    job_file = write_job(tmp_path, JOB.format(extra="\n[limits]\nconcurrency = 1\n"))
    out = tmp_path / "out"
    config = EmulatorConfig(api_keys=frozenset({KEY}), latency_ms=100)
    with EmulatorThread(config) as server:
        job = load_job(job_file, Overrides(base_url=server.base_url))
        worker = threading.Thread(target=run_job, args=(job, RunOptions(api_key=KEY)))
        worker.start()
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                st = output_status(out) if (out / "job.json").exists() else None
                if st is not None and st.running and st.run_rows >= 2:
                    break
                time.sleep(0.05)
            code, text, err = invoke(["status", str(out)])
            during = report([out], by="run").groups.set_index("run")
        finally:
            worker.join()

    assert code == 0, text + err
    lines = text.splitlines()
    assert lines[0] == f"{out} (a run is writing it now)"
    assert re.fullmatch(
        rf"  last run   \S+ running since \d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d UTC "
        rf"\(pid {os.getpid()} on \S+\): [\d,]+ rows done so far",
        lines[-1],
    ), lines[-1]
    assert "killed" not in text
    assert list(during["exit"]) == ["running"]  # report --by run says so too

    # a run killed before its end record: its lock names a process that is gone
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    (out / ".lock").write_text(json.dumps({"pid": gone.pid, "host": socket.gethostname()}))
    with (out / "runs.jsonl").open("a") as f:
        f.write(json.dumps({"run_id": "r-killed", "event": "start", "started_at": "t0"}) + "\n")
    code, text, err = invoke(["status", str(out)])
    assert code == 0 and text.splitlines()[0] == str(out), text + err
    assert text.splitlines()[-1] == "  last run   r-killed started t0, did not finish (killed?)"


# --- 2. advice that fits what a cut answer used ---------------------------------------------


def cut(thinking: int, output: int) -> Answer:
    return Answer('{"label": "go', "MAX_TOKENS", None, Usage(10, output, thinking, 0, 0),
                  None, None, True)  # fmt: skip


@pytest.mark.parametrize(
    ("thinking", "output", "limit", "advice"),
    [
        (
            0,
            150,
            8192,
            "the API stopped the answer at MAX_TOKENS after 0 thinking + 150 output tokens, "
            "well under generation.maxOutputTokens (8,192): not the job's limit, so raising it "
            "will not help; a proxy at model.base_url may cap answers, else retry the row later",
        ),
        (
            8000,
            192,
            8192,
            "answer cut at maxOutputTokens (8,192): thinking took most of it "
            "(8,000 thinking + 192 output tokens); lower generation.thinkingConfig (thinkingBudget "
            "or thinkingLevel) or raise generation.maxOutputTokens",
        ),
        (
            100,
            8092,
            8192,
            "answer cut at maxOutputTokens (8,192) (100 thinking + 8,092 output "
            "tokens); raise generation.maxOutputTokens",
        ),
        (
            0,
            150,
            None,
            "answer cut at the model's default maxOutputTokens (0 thinking + 150 "
            "output tokens); set generation.maxOutputTokens",
        ),
    ],
)
def test_a_cut_answers_advice_fits_what_it_used(
    thinking: int, output: int, limit: int | None, advice: str
) -> None:
    validator = AnswerValidator(normalize_schema({"type": "OBJECT"}, "test"))
    with pytest.raises(AnswerError) as info:
        structured_value(cut(thinking, output), validator, limit)
    assert info.value.category == "max_tokens"
    assert info.value.message == advice


def test_a_run_words_a_cut_well_under_the_limit_as_not_the_limit(tmp_path: Path) -> None:
    (tmp_path / "rows.csv").write_text("id,review\nr1,good\n")
    job = write_job(tmp_path, JOB.format(extra="\n[generation]\nmaxOutputTokens = 8192\n"))
    config = EmulatorConfig(api_keys=frozenset({KEY}), fault_rates={"truncated": 1.0})
    with EmulatorThread(config) as server:
        code, out, err = invoke(["run", str(job), "--base-url", server.base_url, "--quiet"])
    assert code == 1, out + err
    assert "well under generation.maxOutputTokens (8,192): not the job's limit" in out
    assert "raise generation.maxOutputTokens" not in out


# --- 2. each surface names its own options --------------------------------------------------


def test_each_surface_names_its_own_options(tmp_path: Path) -> None:
    error = JobError("countTokens failed; estimate without the API (", OFFLINE, ")")
    assert str(error) == "countTokens failed; estimate without the API (offline=True)"
    assert error.worded("cli") == "countTokens failed; estimate without the API (--offline)"

    (tmp_path / "rows.csv").write_text("id,review\nr1,good\n")
    job = write_job(tmp_path, JOB.format(extra=""))
    with EmulatorThread(EmulatorConfig(api_keys=frozenset({KEY}))) as server:
        url = ["--base-url", server.base_url, "--quiet"]
        assert invoke(["run", str(job), *url])[0] == 0
        job.write_text(job.read_text().replace("{{ review }}", "Judge {{ review }}"))
        code, out, err = invoke(["run", str(job), *url])
        changed = load_job(job, Overrides(base_url=server.base_url))
        with pytest.raises(CheckpointError) as refused:
            run_job(changed, RunOptions(api_key=KEY))
    assert code == 2, out + err
    assert "rerun with --fresh to start over" in err and "fresh=True" not in err
    assert "rerun with fresh=True to start over" in str(refused.value)
    with pytest.raises(JobError) as info:
        report([tmp_path], by="bogus")
    assert str(info.value).startswith("by='bogus': unknown grouping")
