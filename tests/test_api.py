"""The Python API: generate/agenerate and the job-file functions, also inside a running loop."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import batchgen
from batchgen.emulator import EmulatorConfig, EmulatorThread
from batchgen.errors import JobError
from batchgen.job.spec import Overrides, load_job
from batchgen.run.runner import RunOptions, run_job
from tests.helpers.jobs import make_job

KEY = "api-key-31"
PROMPT = "Describe item {{ name }} in a few words."
SCHEMA = {
    "type": "OBJECT",
    "required": ["label", "size"],
    "properties": {"label": {"type": "STRING"}, "size": {"type": "INTEGER"}},
}


def test_sync_and_async_api_inside_a_running_loop_match_the_cli(tmp_path: Path) -> None:
    path = make_job(tmp_path, 12)
    rows = pd.read_csv(tmp_path / "rows.csv")
    with EmulatorThread(EmulatorConfig(api_keys=frozenset({KEY}))) as server:
        job = load_job(path, Overrides(base_url=server.base_url))
        run_job(job, RunOptions(api_key=KEY))
        written = pq.read_table(tmp_path / "out" / "results").sort_by("row_id")

        async def main() -> tuple[pd.DataFrame, pd.DataFrame]:
            common = {"prompt": PROMPT, "schema": SCHEMA, "model": job.model.name,
                          "base_url": server.base_url, "api_key": KEY}  # fmt: skip
            in_loop = batchgen.generate(rows, **common)  # the sync form, inside a running loop
            awaited = await batchgen.agenerate(rows.to_dict("records"), **common)
            return in_loop, awaited

        in_loop, awaited = asyncio.run(main())
    for frame in (in_loop, awaited):
        assert list(frame["row_id"]) == [str(i) for i in range(12)]  # input order
        assert list(frame["status"]) == ["ok"] * 12
        assert frame["error"].isna().all()
        # the same typed values the command line writes, for the same rows
        assert frame["label"].tolist() == written.column("label").to_pylist()
        assert frame["size"].tolist() == written.column("size").to_pylist()
        assert frame["size"].dtype == pd.ArrowDtype(pa.int64())
        assert frame["label"].dtype == pd.ArrowDtype(pa.string())


def test_failed_rows_stay_in_the_frame_with_their_error(tmp_path: Path) -> None:
    rows = [{"name": f"thing {i}"} for i in range(6)]
    script = {"thing 3": ["safety"] * 10}
    with EmulatorThread(EmulatorConfig(api_keys=frozenset({KEY}), script=script)) as server:
        frame = batchgen.generate(rows, prompt=PROMPT, schema=SCHEMA, model="gemini-2.5-flash-lite",
                                  base_url=server.base_url, api_key=KEY)  # fmt: skip
    assert list(frame["status"]) == ["ok", "ok", "ok", "failed", "ok", "ok"]
    assert frame["label"].isna().tolist() == [False, False, False, True, False, False]
    assert str(frame["error"][3]) == "safety: answer stopped by the API (SAFETY)"


def test_the_library_resolves_the_key_and_names_parameters(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    with pytest.raises(JobError, match=r"no API key: set \$GEMINI_API_KEY .*or pass api_key="):
        batchgen.generate([{"name": "x"}], prompt=PROMPT, schema=SCHEMA, model="m")
    with pytest.raises(JobError, match="generate\\(data=...\\): give a pandas DataFrame"):
        batchgen.generate("rows.csv", prompt=PROMPT, schema=SCHEMA, model="m", api_key=KEY)  # type: ignore[arg-type]
    path = make_job(tmp_path, 5)
    with EmulatorThread(EmulatorConfig(api_keys=frozenset({KEY}))) as server:
        monkeypatch.setenv("GEMINI_API_KEY", KEY)
        summary = batchgen.run_file(path, base_url=server.base_url, limit=3)
        assert (summary.rows_done, summary.exit_code) == (3, 0)
        status = batchgen.output_status(tmp_path / "out")
        assert status.rows_done == 3
        report = batchgen.report_outputs(tmp_path / "out", by="run")
        assert report.total["requests"] == 3
