"""In a real Jupyter kernel: ``generate`` and ``await agenerate`` return typed columns and show a
progress bar (tqdm's notebook widget), as a notebook user sees them."""

from __future__ import annotations

import sys
import textwrap
from typing import Any

import nbclient
import nbformat
import pytest

import batchgen
from batchgen.emulator import EmulatorConfig, EmulatorThread
from tests.helpers.emulator_calls import StartEmulator

KEY = "notebook-key-5"
ROWS = 12
WIDGET = "application/vnd.jupyter.widget-view+json"


@pytest.fixture
def emulator(emulator_factory: StartEmulator) -> EmulatorThread:
    return emulator_factory(EmulatorConfig(api_keys=frozenset({KEY}), latency_ms=20))


def cells(url: str) -> list[str]:
    common = (
        f'prompt="Describe item {{{{ name }}}} in a few words.", schema=SCHEMA, '
        f'model="gemini-2.5-flash-lite", base_url={url!r}, api_key={KEY!r}'
    )
    setup = f"""
        import sys
        import pandas as pd
        import pyarrow as pa
        import batchgen
        SCHEMA = {{"type": "OBJECT", "required": ["label", "size"], "properties": {{
            "label": {{"type": "STRING"}}, "size": {{"type": "INTEGER"}}}}}}
        rows = pd.DataFrame({{"name": [f"thing {{i}}" for i in range({ROWS})]}})
        print(sys.executable)
    """
    check = f"""
        for frame in (in_loop, awaited):
            assert list(frame["status"]) == ["ok"] * {ROWS}, frame
            assert frame["size"].dtype == pd.ArrowDtype(pa.int64())
            assert frame["label"].dtype == pd.ArrowDtype(pa.string())
        assert in_loop["label"].tolist() == awaited["label"].tolist()
        print("columns ok")
    """
    return [
        setup,
        f"in_loop = batchgen.generate(rows, {common})",  # the sync form, in the kernel's loop
        f"awaited = await batchgen.agenerate(rows, {common})",
        check,
        f"quiet = batchgen.generate(rows, {common}, progress=False)",
        # without ipywidgets (as if not installed): tqdm's text bar in the cell's output
        f"import tqdm.notebook; tqdm.notebook.IProgress = None\n"
        f"text = batchgen.generate(rows, {common})",
    ]


def outputs(cell: Any) -> tuple[list[dict[str, Any]], str]:
    widgets = [o["data"][WIDGET] for o in cell.outputs if WIDGET in o.get("data", {})]
    text = "".join(o.get("text", "") for o in cell.outputs if o["output_type"] == "stream")
    return widgets, text


def test_a_notebook_shows_progress_and_gets_typed_columns(emulator: EmulatorThread) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(textwrap.dedent(c)) for c in cells(emulator.base_url)]
    client = nbclient.NotebookClient(nb, timeout=60, kernel_name="python3")
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as exc:
        pytest.fail(f"the notebook failed: {exc}")
    assert outputs(nb.cells[0])[1].strip() == sys.executable  # this environment's batchgen
    assert "columns ok" in outputs(nb.cells[3])[1]
    for cell in nb.cells[1:3]:  # generate and await agenerate each drew a bar
        widgets, _ = outputs(cell)
        assert len(widgets) == 1
    # the bars' last state: every row finished (the widget state nbclient keeps)
    state = nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    bars = [w["state"] for w in state.values() if w["model_name"] == "FloatProgressModel"]
    assert [(b["value"], b["max"]) for b in bars] == [(ROWS, ROWS)] * 2
    assert outputs(nb.cells[4]) == ([], "")  # progress=False: nothing shown
    widgets, text = outputs(nb.cells[5])
    assert not widgets and f"{ROWS}/{ROWS}" in text and "tokens=" in text
    assert emulator.emulator.counts["generateContent"] == 4 * ROWS


def test_outside_a_notebook_the_library_is_quiet_unless_asked(
    emulator: EmulatorThread, capfd: pytest.CaptureFixture[str]
) -> None:
    rows = [{"name": f"thing {i}"} for i in range(4)]
    common: dict[str, Any] = {
        "prompt": "Describe {{ name }}.", "schema": {"type": "STRING"},
        "model": "gemini-2.5-flash-lite", "base_url": emulator.base_url, "api_key": KEY,
    }  # fmt: skip
    batchgen.generate(rows, **common)
    assert capfd.readouterr().err == ""
    batchgen.generate(rows, **common, progress=True)  # a text bar, on stderr
    err = capfd.readouterr().err
    assert "4/4" in err and "tokens=" in err and "cost=" in err


def test_progress_takes_a_switch_or_a_reporter() -> None:
    from batchgen.errors import JobError
    from batchgen.run.notebook import NotebookProgress, library_progress
    from batchgen.run.progress import NoProgress

    assert isinstance(library_progress(None), NoProgress)  # not in a kernel
    assert isinstance(library_progress(False), NoProgress)
    assert isinstance(library_progress(True), NotebookProgress)
    mine = NoProgress()
    assert library_progress(mine) is mine
    with pytest.raises(JobError, match="progress=1"):
        library_progress(1)  # type: ignore[arg-type]
