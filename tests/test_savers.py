"""Paying less for the same answers, against the emulator: identical requests paid once
(output.dedupe), several candidates per call, few-shot turns, safety settings and thoughts."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from click.testing import CliRunner

import batchgen
from batchgen.cli import main
from batchgen.emulator import EmulatorConfig, EmulatorThread
from batchgen.errors import JobError
from batchgen.gemini.answers import parse_response
from batchgen.job.spec import Overrides, load_job
from batchgen.run.runner import RunOptions, RunSummary, run_job
from tests.helpers.emulator_calls import FLASH, KEY, MakeClient, ask, call
from tests.helpers.jobs import item_job
from tests.helpers.outputs import read_rows

FAST = {"backoff_initial_seconds": 0.01, "backoff_max_seconds": 0.02}


@pytest.fixture
def emulator(emulator_factory: Any) -> EmulatorThread:
    server: EmulatorThread = emulator_factory(EmulatorConfig(record=True))
    return server


def run(path: Path, server: EmulatorThread, **options: Any) -> RunSummary:
    job = load_job(path, Overrides(base_url=server.base_url))
    return run_job(job, RunOptions(api_key=KEY, handle_signals=False, **options))


def calls(server: EmulatorThread) -> int:
    return server.emulator.counts["generateContent"]


def repeated_rows(folder: Path, rows: int, distinct: int, start: int = 0) -> None:
    """rows.csv with ``rows`` ids and only ``distinct`` different names (so prompts)."""
    with (folder / "rows.csv").open("w") as f:
        f.write("id,name\n")
        f.writelines(f"r{i},item-{i % distinct:03d}\n" for i in range(start, start + rows))


# --- identical requests paid once -----------------------------------------------------------


def test_dedupe_pays_once_per_distinct_request_and_a_rerun_pays_nothing(
    tmp_path: Path, emulator: EmulatorThread
) -> None:
    path = item_job(tmp_path, 1, output={"dedupe": True}, limits={"concurrency": 16})
    repeated_rows(tmp_path, 400, 100)
    summary = run(path, emulator)
    assert summary.exit_code == 0 and summary.rows_done == 400
    assert calls(emulator) <= 105 and summary.requests == calls(emulator)
    assert summary.rows_reused == 400 - calls(emulator)
    results = read_rows(tmp_path / "out", "results")
    assert sorted(r["row_id"] for r in results) == sorted(f"r{i}" for i in range(400))
    by_name: dict[str, set[str]] = {}
    for row in results:  # every twin holds the answer its request got
        by_name.setdefault(row["request_hash"], set()).add(row["label"])
    assert len(by_name) == 100 and all(len(labels) == 1 for labels in by_name.values())
    usage = read_rows(tmp_path / "out", "usage")
    reused = [u for u in usage if u["outcome"] == "reused"]
    assert len(reused) == summary.rows_reused and all(u["total_tokens"] == 0 for u in reused)
    assert run(path, emulator).requests == 0  # a rerun pays nothing
    assert calls(emulator) <= 105


def test_twins_wait_for_the_call_in_flight_instead_of_calling(
    emulator_factory: Any, tmp_path: Path
) -> None:
    server = emulator_factory(EmulatorConfig(latency_ms=200))
    path = item_job(tmp_path, 1, output={"dedupe": True}, limits={"concurrency": 8})
    repeated_rows(tmp_path, 20, 1)  # twenty rows, one request, all read while it is in flight
    summary = run(path, server)
    assert summary.exit_code == 0 and calls(server) == 1 and summary.rows_reused == 19
    assert len(read_rows(tmp_path / "out", "results")) == 20


def test_dedupe_reuses_answers_an_earlier_run_paid_for(
    tmp_path: Path, emulator: EmulatorThread
) -> None:
    path = item_job(tmp_path, 1, output={"dedupe": True})
    repeated_rows(tmp_path, 20, 20)
    assert run(path, emulator).requests == 20
    repeated_rows(tmp_path, 40, 20)  # r20..r39 ask what r0..r19 asked
    summary = run(path, emulator)
    assert summary.requests == 0 and summary.rows_reused == 20 and summary.exit_code == 0
    assert len(read_rows(tmp_path / "out", "results")) == 40


def test_report_counts_reused_rows_apart_from_requests(
    tmp_path: Path, emulator: EmulatorThread
) -> None:
    path = item_job(tmp_path, 1, output={"dedupe": True})
    repeated_rows(tmp_path, 30, 10)
    run(path, emulator)
    result = CliRunner().invoke(main, ["report", str(tmp_path / "out"), "--format", "json"])
    assert result.exit_code == 0, result.output
    total = json.loads(result.output)["total"]
    assert total["requests"] == calls(emulator) and total["rows_reused"] == 30 - total["requests"]
    assert total["rows_done"] == 30


def test_a_failed_request_hands_its_failure_to_its_twins(
    emulator_factory: Any, tmp_path: Path
) -> None:
    server = emulator_factory(EmulatorConfig(script={"item-001": ["500"] * 10}))
    path = item_job(tmp_path, 1, output={"dedupe": True}, retry={"attempts": 2, **FAST},
                    limits={"concurrency": 1})  # fmt: skip
    repeated_rows(tmp_path, 6, 2)  # r1, r3, r5 ask about item-001
    summary = run(path, server)
    assert summary.exit_code == 1 and summary.rows_failed == 3 and summary.rows_done == 3
    assert calls(server) == 1 + 2  # item-000 once, item-001 twice (its retries), no more
    errors = {e["row_id"]: e for e in read_rows(tmp_path / "out", "errors")}
    assert set(errors) == {"r1", "r3", "r5"}
    assert "the same request as row r1" in errors["r3"]["message"]


def test_estimate_and_validate_count_repeated_requests(tmp_path: Path) -> None:
    path = item_job(tmp_path, 1)
    repeated_rows(tmp_path, 40, 10)
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert result.exit_code == 0, result.output
    assert "30 of 40 rows repeat another row's request" in result.output
    assert "dedupe = true" in result.output
    plain = CliRunner().invoke(main, ["estimate", str(path), "--offline", "--format", "json"])
    assert plain.exit_code == 0, plain.output
    assert json.loads(plain.output)["repeats"]["repeated"] == 30
    deduped = item_job(tmp_path, 1, output={"dedupe": True})
    repeated_rows(tmp_path, 40, 10)
    result = CliRunner().invoke(main, ["estimate", str(deduped), "--offline"])
    assert result.exit_code == 0, result.output
    assert "output.dedupe is on, so 10 calls are paid" in result.output
    once = json.loads(
        CliRunner().invoke(main, ["estimate", str(deduped), "--offline", "--format", "json"]).output
    )
    assert once["prompt_tokens"] * 4 == pytest.approx(
        json.loads(plain.output)["prompt_tokens"], 0.02
    )


# --- candidates ----------------------------------------------------------------------------


def test_three_candidates_give_three_rows_per_input_row_from_one_call(
    tmp_path: Path, emulator: EmulatorThread
) -> None:
    path = item_job(tmp_path, 50, generation={"candidateCount": 3}, limits={"concurrency": 8})
    summary = run(path, emulator)
    assert summary.exit_code == 0 and calls(emulator) == 50 and summary.output_rows == 150
    results = read_rows(tmp_path / "out", "results")
    assert len(results) == 150
    for i in range(50):
        mine = [r for r in results if r["row_id"] == f"r{i}"]
        assert sorted(r["candidate"] for r in mine) == [0, 1, 2]
    assert len({r["label"] for r in results}) > 50  # distinct answers, not one copied thrice
    assert len(read_rows(tmp_path / "out", "usage")) == 50  # usage counted once per call
    assert run(path, emulator).requests == 0  # all done


def test_an_unusable_candidate_is_marked_and_the_rest_kept(
    emulator_factory: Any, tmp_path: Path
) -> None:
    server = emulator_factory(EmulatorConfig(script={"item-000": ["invalid_last"]}))
    path = item_job(tmp_path, 2, generation={"candidateCount": 2})
    summary = run(path, server)
    assert summary.exit_code == 0 and calls(server) == 2
    rows = {(r["row_id"], r["candidate"]): r for r in read_rows(tmp_path / "out", "results")}
    broken = rows[("r0", 1)]
    assert broken["label"] is None and broken["candidate_error"].startswith("schema:")
    assert rows[("r0", 0)]["candidate_error"] is None and rows[("r0", 0)]["label"]


def test_candidates_work_with_explode(tmp_path: Path, emulator: EmulatorThread) -> None:
    path = item_job(tmp_path, 4, generation={"candidateCount": 2}, output={"explode": True})
    text = path.read_text().replace(
        '[response_schema]\ntype = "OBJECT"',
        '[response_schema]\ntype = "ARRAY"\nitems = { type = "OBJECT", required = ["label"], '
        'properties = { label = { type = "STRING" } } }\n[unused]\ntype = "OBJECT"',
    )
    path.write_text(text.split("[unused]")[0])
    summary = run(path, emulator)
    assert summary.exit_code == 0 and calls(emulator) == 4
    results = read_rows(tmp_path / "out", "results")
    assert {(r["row_id"], r["candidate"]) for r in results} == {
        (f"r{i}", c) for i in range(4) for c in (0, 1)
    }


def test_candidate_count_out_of_range_is_refused(tmp_path: Path) -> None:
    path = item_job(tmp_path, 1, generation={"candidateCount": 9})
    with pytest.raises(JobError, match="candidateCount must be a whole number from 1 to 8"):
        load_job(path)


# --- few-shot turns -------------------------------------------------------------------------

EXAMPLES = """
[[prompt.examples]]
user = "Describe item-demo in a few words."
model = { label = "a demo item" }

[[prompt.examples]]
user = "Describe {{ name }}-twin in a few words."
model = '{"label": "twin of {{ name }}"}'
"""


def test_few_shot_examples_arrive_as_alternating_turns(
    tmp_path: Path, emulator: EmulatorThread
) -> None:
    path = item_job(tmp_path, 3)
    path.write_text(path.read_text() + EXAMPLES)
    assert run(path, emulator).exit_code == 0
    for body in emulator.emulator.received:
        contents = body["contents"]
        assert [c["role"] for c in contents] == ["user", "model", "user", "model", "user"]
        name = contents[-1]["parts"][0]["text"].split()[1]
        assert json.loads(contents[1]["parts"][0]["text"]) == {"label": "a demo item"}
        assert contents[3]["parts"][0]["text"] == f'{{"label": "twin of {name}"}}'


def test_an_example_answer_that_breaks_the_schema_is_refused(tmp_path: Path) -> None:
    path = item_job(tmp_path, 1)
    path.write_text(path.read_text() + '[[prompt.examples]]\nuser = "x"\nmodel = { size = 3 }\n')
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert result.exit_code != 0
    assert "prompt.examples[0].model breaks the response schema" in result.output
    assert "Traceback" not in result.output


# --- safety settings and thinking -----------------------------------------------------------

SAFETY = """
[[safety_settings]]
category = "HARM_CATEGORY_HARASSMENT"
threshold = "BLOCK_ONLY_HIGH"

[[safety_settings]]
category = "hate_speech"
threshold = "block_none"
"""


def test_safety_settings_arrive_in_the_request(tmp_path: Path, emulator: EmulatorThread) -> None:
    path = item_job(tmp_path, 2)
    path.write_text(path.read_text() + SAFETY)
    assert run(path, emulator).exit_code == 0
    for body in emulator.emulator.received:
        assert body["safetySettings"] == [
            {"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_ONLY_HIGH"},
            {"category": "HARM_CATEGORY_HATE_SPEECH", "threshold": "BLOCK_NONE"},
        ]


@pytest.mark.parametrize(
    ("extra", "said"),
    [
        ('[[safety_settings]]\ncategory = "HARM_CATEGORY_RUDENESS"\nthreshold = "OFF"\n',
         "safety_settings[0].category must be one of HARM_CATEGORY_HARASSMENT"),
        ('[[safety_settings]]\ncategory = "HARM_CATEGORY_HARASSMENT"\nthreshold = "SOMETIMES"\n',
         "safety_settings[0].threshold must be one of BLOCK_LOW_AND_ABOVE"),
    ],
)  # fmt: skip
def test_validate_refuses_unknown_safety_names(tmp_path: Path, extra: str, said: str) -> None:
    path = item_job(tmp_path, 1)
    path.write_text(path.read_text() + extra)
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert result.exit_code != 0 and said in result.output
    assert "Traceback" not in result.output


def test_validate_refuses_an_unknown_thinking_level(tmp_path: Path) -> None:
    path = item_job(tmp_path, 1)
    path.write_text(path.read_text() + '[generation.thinkingConfig]\nthinkingLevel = "extreme"\n')
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert result.exit_code != 0
    assert "thinkingConfig.thinkingLevel must be one of MINIMAL, LOW, MEDIUM, HIGH" in result.output


def test_thought_summaries_go_in_their_own_column(tmp_path: Path, emulator: EmulatorThread) -> None:
    path = item_job(tmp_path, 3, model={"name": FLASH})
    path.write_text(path.read_text() + "[generation.thinkingConfig]\nincludeThoughts = true\n")
    assert run(path, emulator).exit_code == 0
    results = read_rows(tmp_path / "out", "results")
    assert all(r["thoughts"] and r["thoughts"].startswith("**") for r in results)
    assert all(r["label"] for r in results)  # the answer parsed without the thought part


async def test_emulator_refuses_unknown_enum_names_as_the_api_does(
    make_client: MakeClient,
) -> None:
    client, _ = await make_client()
    body = ask("hi")
    body["safetySettings"] = [{"category": "HARM_CATEGORY_RUDENESS", "threshold": "OFF"}]
    status, answer = await call(client, body)
    assert status == 400 and "safety_settings[0].category" in answer["error"]["message"]
    body["safetySettings"] = [{"category": 7, "threshold": "block_none"}]  # numbers, any case
    assert (await call(client, body))[0] == 200
    level = ask("hi", thinkingConfig={"thinkingLevel": "ultra"})
    assert (await call(client, level))[0] == 400


async def test_emulator_answers_distinct_candidates(make_client: MakeClient) -> None:
    client, _ = await make_client()
    status, answer = await call(client, ask("hi", {"type": "STRING"}, candidateCount=3))
    assert status == 200 and [c["index"] for c in answer["candidates"]] == [0, 1, 2]
    texts = [c["content"]["parts"][0]["text"] for c in answer["candidates"]]
    assert len(set(texts)) == 3
    _, single = await call(client, ask("hi", {"type": "STRING"}))
    assert single["candidates"][0]["content"] == answer["candidates"][0]["content"]


def test_batch_mode_sends_one_line_per_distinct_request(
    emulator_factory: Any, tmp_path: Path
) -> None:
    server = emulator_factory(EmulatorConfig(batch_pending_s=0.05, batch_running_s=0.1))
    path = item_job(
        tmp_path, 1, model={"tier": "batch"}, output={"dedupe": True},
        batch={"rows_per_chunk": 25, "poll_initial_seconds": 0.02, "poll_max_seconds": 0.05},
    )  # fmt: skip
    repeated_rows(tmp_path, 60, 20)
    summary = run(path, server)
    assert summary.exit_code == 0 and summary.rows_done == 60 and summary.rows_reused == 40
    usage = read_rows(tmp_path / "out", "usage")
    assert len([u for u in usage if u["outcome"] == "ok"]) == 20  # 20 lines answered, paid
    assert len(read_rows(tmp_path / "out", "results")) == 60


def test_print_schema_knows_the_new_keys(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["validate", "--print-schema"])
    check = jsonschema.Draft202012Validator(json.loads(result.output))
    path = item_job(tmp_path, 1, output={"dedupe": True}, generation={"candidateCount": 2})
    raw = tomllib.loads(path.read_text() + EXAMPLES + SAFETY)
    assert not list(check.iter_errors(raw))
    load_job(path)
    assert not check.is_valid(raw | {"safety_settings": [{"category": "x"}]})
    assert not check.is_valid(raw | {"prompt": {"user": "u", "examples": [{"user": "u"}]}})
    assert not check.is_valid(raw | {"output": {"dedupe": "yes"}})


def test_generate_takes_the_same_options(emulator: EmulatorThread) -> None:
    rows = [{"name": f"item-{i % 2}"} for i in range(4)]
    schema = {"type": "OBJECT", "required": ["label"], "properties": {"label": {"type": "STRING"}}}
    frame = batchgen.generate(
        rows, prompt="Describe {{ name }}.", schema=schema, model="gemini-2.5-flash-lite",
        base_url=emulator.base_url, api_key=KEY, dedupe=True,
        generation={"candidateCount": 2},
        examples=[{"user": "Describe a cup.", "model": {"label": "a cup"}}],
        safety_settings=[{"category": "harassment", "threshold": "off"}],
    )  # fmt: skip
    assert list(frame["row_id"]) == ["0", "0", "1", "1", "2", "2", "3", "3"]
    assert list(frame["candidate"]) == [0, 1] * 4
    assert calls(emulator) == 2  # two distinct requests
    body = emulator.emulator.received[0]
    assert [c["role"] for c in body["contents"]] == ["user", "model", "user"]
    assert body["safetySettings"] == [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "OFF"}]


def test_every_candidate_is_read_with_its_thoughts_apart() -> None:
    def part(text: str, thought: bool = False) -> dict[str, Any]:
        return {"text": text, "thought": True} if thought else {"text": text}

    answer = parse_response({
        "candidates": [
            {"content": {"parts": [part("plan A", True), part('"a"')]}, "finishReason": "STOP"},
            {"content": {"parts": [part('"b"')]}, "finishReason": "MAX_TOKENS", "index": 1},
        ],
        "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 4},
    })  # fmt: skip
    assert (answer.text, answer.thoughts, answer.finish_reason) == ('"a"', "plan A", "STOP")
    assert [(c.text, c.finish_reason, c.thoughts) for c in answer.candidates] == [
        ('"a"', "STOP", "plan A"),
        ('"b"', "MAX_TOKENS", None),
    ]
    assert answer.usage.prompt == 5 and answer.usage.output == 4  # once per call
