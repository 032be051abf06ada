"""The emulator's Files API and Batch Mode driven by Google's own SDK (the wire the service speaks).

Skipped unless google-genai is installed (``pip install -e '.[test,bench]'``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from google import genai
from google.genai import types

from batchgen.emulator import EmulatorThread
from tests.helpers.clock import Clock
from tests.helpers.emulator_calls import StartEmulator

FLASH = "gemini-2.5-flash"


@pytest.fixture
def emulator(emulator_factory: StartEmulator) -> EmulatorThread:
    return emulator_factory(batch_pending_s=10, batch_running_s=10, batch_line_error_rate=0.2)


def sdk(base_url: str) -> Any:
    options = types.HttpOptions(base_url=base_url, api_version="v1beta")
    return genai.Client(api_key="sdk-key-0123456789", http_options=options)


def test_sdk_uploads_creates_polls_and_downloads(emulator: EmulatorThread, tmp_path: Path) -> None:
    clock = Clock()
    emulator.emulator.clock = clock
    client = sdk(emulator.base_url)
    source = tmp_path / "requests.jsonl"
    request = {"contents": [{"parts": [{"text": "hello"}], "role": "user"}]}
    source.write_text(
        "".join(json.dumps({"key": f"k{i}", "request": request}) + "\n" for i in range(20))
    )
    config = types.UploadFileConfig(mime_type="application/jsonl", display_name="requests")
    file = client.files.upload(file=str(source), config=config)
    assert file.size_bytes == source.stat().st_size and file.display_name == "requests"
    assert client.files.get(name=file.name).sha256_hash == file.sha256_hash
    job = client.batches.create(model=FLASH, src=file.name, config={"display_name": "sdk-job"})
    assert job.name.startswith("batches/") and job.state.name == "JOB_STATE_PENDING"
    clock.now += 15
    assert client.batches.get(name=job.name).state.name == "JOB_STATE_RUNNING"
    clock.now += 10
    done = client.batches.get(name=job.name)
    assert done.state.name == "JOB_STATE_SUCCEEDED" and done.display_name == "sdk-job"
    assert done.dest is not None and done.dest.file_name == f"files/batch-{job.name[8:]}"
    lines = [json.loads(x) for x in client.files.download(file=done.dest.file_name).splitlines()]
    assert sorted(line["key"] for line in lines) == sorted(f"k{i}" for i in range(20))
    assert any("error" in line for line in lines) and any("response" in line for line in lines)
    assert [j.name for j in client.batches.list()] == [job.name]


def test_sdk_inline_batch_cancel_and_delete(emulator: EmulatorThread) -> None:
    client = sdk(emulator.base_url)
    emulator.emulator.clock = Clock()
    src = [
        {"contents": [{"parts": [{"text": f"p{i}"}]}], "metadata": {"key": f"m{i}"}}
        for i in range(3)
    ]
    job = client.batches.create(model=FLASH, src=src)
    client.batches.cancel(name=job.name)
    assert client.batches.get(name=job.name).state.name == "JOB_STATE_CANCELLED"
    client.batches.delete(name=job.name)
    assert list(client.batches.list()) == []
    emulator.emulator.clock.now += 100  # a new inline batch, now finished at once
    finished = client.batches.create(model=FLASH, src=src)
    emulator.emulator.clock.now += 100
    got = client.batches.get(name=finished.name)
    assert got.dest is not None and got.dest.inlined_responses is not None
    keys = sorted(r.metadata["key"] for r in got.dest.inlined_responses)
    assert keys == ["m0", "m1", "m2"]
