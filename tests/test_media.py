"""Media columns and shared context files against the emulator: every row answered, each
distinct uploaded content uploaded once (and not again by a later run), Batch Mode by fileData,
a bad file failing only its row with one line and no call, a file gone at the server uploaded
again without failing the row, and the emulator's token counts by modality."""

from __future__ import annotations

import base64
import hashlib
import json
import struct
import subprocess
import sys
import zlib
from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from click.testing import CliRunner

from batchgen.api import estimate_file, generate
from batchgen.cli import main
from batchgen.emulator import EmulatorConfig, EmulatorThread
from batchgen.input.media import BadMediaError, media_blocks, read_media, scan_path
from batchgen.job.spec import Overrides, load_job
from batchgen.run.runner import RunOptions, RunSummary, run_job
from batchgen.store.batches import BatchStore
from tests.helpers.emulator_calls import MakeClient, StartEmulator, call
from tests.helpers.jobs import item_job
from tests.helpers.outputs import read_rows, result_ids

KEY = "sk-media-secret-0123456789"
FAST = EmulatorConfig(batch_pending_s=0.05, batch_running_s=0.1)
THRESHOLD_MB = 0.05  # 50 kB: the "big" images below are over it, the small ones under


def png(width: int, height: int, seed: int, noise: int = 0) -> bytes:
    """A PNG; ``noise`` bytes of incompressible data make it bigger without changing its size."""
    rows = b"".join(b"\x00" + bytes((x * seed + y) % 256 for x in range(width * 3))
                    for y in range(height))  # fmt: skip

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    extra = chunk(b"teXt", hashlib.shake_256(bytes([seed])).digest(noise)) if noise else b""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + extra
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))  # fmt: skip


def pdf(pages: int, tag: str) -> bytes:
    body = b"".join(b"%d 0 obj << /Type /Page >> endobj\n" % (i + 3) for i in range(pages))
    return b"%PDF-1.4\n% " + tag.encode() + b"\n1 0 obj << /Type /Pages >> endobj\n" + body


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def media_folder(folder: Path, rows: int, start: int = 0) -> list[tuple[str, str, str]]:
    """Files for rows ``start..start+rows``: images cycling over 4 small shared ones, and a big
    one of its own every 5th row; a PDF of its own per row. (id, image, scan) per row."""
    media = folder / "media"
    media.mkdir(exist_ok=True)
    out = []
    for i in range(start, start + rows):
        if i % 5 == 0:
            image = f"big-{i}.png"
            (media / image).write_bytes(png(900, 700, i % 250 + 1, noise=60_000))
        else:
            image = f"small-{i % 4}.png"
            if not (media / image).exists():
                (media / image).write_bytes(png(32, 32, i % 4 + 1))
        scan = f"doc-{i}.pdf"
        (media / scan).write_bytes(pdf(i % 3 + 1, f"doc {i}"))
        out.append((f"r{i}", f"media/{image}", f"media/{scan}"))
    return out


def media_job(folder: Path, rows: list[tuple[str, str, str]], **tables: Any) -> Path:
    sections: dict[str, Any] = {
        "prompt": {"user": "Label document {{ id }}.", "media": ["image", "scan"]},
        "media": {"inline_max_mb": THRESHOLD_MB},
        "limits": {"concurrency": 8},
    }
    for name, keys in tables.items():
        sections[name] = {**sections.get(name, {}), **keys}
    path = item_job(folder, 0)
    text = path.read_text()
    head, schema = text.split("[response_schema]")
    extra = "".join(
        f"[{name}]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in keys.items()) + "\n"
        for name, keys in sections.items()
    )
    head = head.replace('[prompt]\nuser = "Describe {{ name }} in a few words."\n', "")
    path.write_text(head + extra + "[response_schema]" + schema)
    with (folder / "rows.csv").open("w") as f:
        f.write("id,image,scan\n")
        f.writelines(f"{i},{image},{scan}\n" for i, image, scan in rows)
    return path


def run(path: Path, server: EmulatorThread, tier: str | None = None) -> RunSummary:
    job = load_job(path, Overrides(base_url=server.base_url, tier=tier))
    return run_job(job, RunOptions(api_key=KEY, handle_signals=False))


def uploaded(server: EmulatorThread) -> Counter[str]:
    """How many times each content (sha256) was uploaded to the emulator's Files API."""
    files = server.emulator.files.files.values()
    return Counter(hashlib.sha256(f.data).hexdigest() for f in files if f.source == "UPLOADED")


def big_contents(folder: Path) -> set[str]:
    return {hashlib.sha256(p.read_bytes()).hexdigest() for p in (folder / "media").glob("big-*")}


@pytest.fixture
def emulator(emulator_factory: StartEmulator) -> EmulatorThread:
    return emulator_factory(FAST)


def test_sixty_rows_each_content_uploaded_once_and_a_second_run_only_new(
    tmp_path: Path, emulator: EmulatorThread
) -> None:
    path = media_job(tmp_path, media_folder(tmp_path, 60))
    summary = run(path, emulator)
    assert summary.exit_code == 0
    assert sorted(result_ids(tmp_path / "out")) == sorted(f"r{i}" for i in range(60))
    assert all(row["label"] for row in read_rows(tmp_path / "out", "results"))
    first = uploaded(emulator)
    assert set(first.values()) == {1}  # no content twice
    assert big_contents(tmp_path) <= set(first)  # every above-threshold content went up
    assert len(big_contents(tmp_path)) == 12

    rows = media_folder(tmp_path, 60) + media_folder(tmp_path, 10, start=60)
    media_job(tmp_path, rows)
    assert run(path, emulator).exit_code == 0
    second = uploaded(emulator)
    assert set(second.values()) == {1}
    assert set(second) - set(first) == big_contents(tmp_path) - set(first)  # only the new ones
    assert emulator.emulator.counts["generateContent"] == 70
    assert len(result_ids(tmp_path / "out")) == 70


def test_batch_tier_names_uploaded_files(tmp_path: Path, emulator: EmulatorThread) -> None:
    path = media_job(tmp_path, media_folder(tmp_path, 12),
                     batch={"poll_initial_seconds": 0.02, "poll_max_seconds": 0.05})  # fmt: skip
    assert run(path, emulator, tier="batch").exit_code == 0
    assert len(result_ids(tmp_path / "out")) == 12
    store = BatchStore(tmp_path / "out")
    for chunk in store.records():
        text = store.chunk_path(chunk).read_bytes()
        assert b"inlineData" not in text and b"fileData" in text
    assert set(uploaded(emulator).values()) == {1}


def test_a_missing_file_fails_its_row_with_one_line_and_no_call(
    tmp_path: Path, emulator: EmulatorThread
) -> None:
    rows = media_folder(tmp_path, 5)
    path = media_job(tmp_path, rows)
    assert run(path, emulator).exit_code == 0
    rows.append(("r5", "media/nowhere.png", "media/doc-0.pdf"))
    media_job(tmp_path, rows)
    before = emulator.emulator.counts["generateContent"]
    args = ["run", str(path), "--base-url", emulator.base_url]
    result = CliRunner().invoke(main, args, env={"GEMINI_API_KEY": KEY})
    assert result.exit_code == 1
    assert emulator.emulator.counts["generateContent"] == before  # the 5 done, r5 never sent
    (error,) = read_rows(tmp_path / "out", "errors")
    assert error["row_id"] == "r5" and error["category"] == "input"
    message = error["message"]
    assert "\n" not in message and "row r5" in message and "'image'" in message
    assert "nowhere.png: no such file" in message
    assert sorted(result_ids(tmp_path / "out")) == [f"r{i}" for i in range(5)]


@pytest.mark.parametrize(
    ("value", "said"),
    [
        ("media", "is a directory"),
        ("media/empty.png", "empty file"),
        ("media/archive.qqq", "unknown media type"),
        ("media/archive.zip", "unsupported media type application/zip"),
        ("ftp://example.com/a.png", "unknown URI scheme ftp://"),
    ],
)
def test_bad_media_are_named_before_any_call(
    tmp_path: Path, emulator: EmulatorThread, value: str, said: str
) -> None:
    rows = media_folder(tmp_path, 2)
    (tmp_path / "media" / "empty.png").write_bytes(b"")
    (tmp_path / "media" / "archive.qqq").write_bytes(b"\x00\x01\x02 not a known type")
    (tmp_path / "media" / "archive.zip").write_bytes(b"PK\x03\x04 zipped")
    rows.append(("bad", value, "media/doc-0.pdf"))
    path = media_job(tmp_path, rows)
    assert run(path, emulator).exit_code == 1
    assert emulator.emulator.counts["generateContent"] == 2
    (error,) = read_rows(tmp_path / "out", "errors")
    assert said in error["message"] and "row bad: column 'image'" in error["message"]


def test_a_file_changed_since_the_prescan_is_refused(tmp_path: Path) -> None:
    file = tmp_path / "a.png"
    file.write_bytes(png(8, 8, 1))
    ref = scan_path(file, "image")
    file.write_bytes(png(8, 8, 1) + b"more")
    with pytest.raises(BadMediaError, match="changed since the pre-scan"):
        read_media(ref)
    with pytest.raises(BadMediaError, match="changed since the pre-scan"):
        list(media_blocks(ref, 3))  # as a request streams it


def test_a_file_gone_at_the_server_is_uploaded_again(
    tmp_path: Path, emulator: EmulatorThread
) -> None:
    rows = media_folder(tmp_path, 10)
    path = media_job(tmp_path, rows)
    assert run(path, emulator).exit_code == 0
    emulator.emulator.files.files.clear()  # every upload expired or deleted
    more = rows + [(f"again-{i}", image, scan) for i, (_, image, scan) in enumerate(rows)]
    media_job(tmp_path, more)
    assert run(path, emulator).exit_code == 0
    assert len(result_ids(tmp_path / "out")) == 20
    assert read_rows(tmp_path / "out", "errors") == []
    assert big_contents(tmp_path) <= set(uploaded(emulator))


def test_context_files_lead_every_request(tmp_path: Path, emulator_factory: StartEmulator) -> None:
    server = emulator_factory(record=True)
    (tmp_path / "manual.pdf").write_bytes(pdf(2, "manual"))
    path = media_job(tmp_path, media_folder(tmp_path, 3),
                     prompt={"media": ["scan"], "context": ["manual.pdf"]})  # fmt: skip
    assert run(path, server).exit_code == 0
    for body in server.emulator.received:
        parts = body["contents"][0]["parts"]
        assert list(parts[-1]) == ["text"]
        first = parts[0].get("inlineData") or parts[0]["fileData"]
        assert first["mimeType"] == "application/pdf"
        if "data" in first:
            assert base64.b64decode(first["data"]) == pdf(2, "manual")


async def test_the_emulator_counts_media_by_modality(make_client: MakeClient) -> None:
    client, _ = await make_client()
    image = {"inlineData": {"mimeType": "image/png", "data": b64(png(900, 700, 1))}}
    scan = {"inlineData": {"mimeType": "application/pdf", "data": b64(pdf(3, "x"))}}
    body = {"contents": [{"role": "user", "parts": [image, scan, {"text": "abcdefgh"}]}]}
    status, counted = await call(client, body, method="countTokens")
    assert status == 200
    details = {d["modality"]: d["tokenCount"] for d in counted["promptTokensDetails"]}
    assert details == {"TEXT": 2, "IMAGE": 258 * 2, "DOCUMENT": 258 * 3}
    assert counted["totalTokens"] == sum(details.values())
    gone = {"fileData": {"mimeType": "image/png", "fileUri": "https://x/v1beta/files/nope"}}
    body = {"contents": [{"role": "user", "parts": [gone, {"text": "hi"}]}]}
    status, answer = await call(client, body)
    assert status == 403 and "nope" in answer["error"]["message"]


def test_estimate_counts_media_as_the_run_is_billed(
    tmp_path: Path, emulator: EmulatorThread
) -> None:
    path = media_job(tmp_path, media_folder(tmp_path, 10))
    estimate = estimate_file(path, api_key=KEY, base_url=emulator.base_url, sample=10)
    assert run(path, emulator).exit_code == 0
    billed = sum(row["prompt_tokens"] for row in read_rows(tmp_path / "out", "usage"))
    assert estimate.prompt_tokens == billed
    assert billed > 10 * 258  # every row has at least an image and a page


def test_the_library_takes_media_columns_of_bytes_and_paths(
    tmp_path: Path, emulator: EmulatorThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "scan.pdf").write_bytes(pdf(2, "lib"))
    frame = pd.DataFrame({
        "name": ["a", "b", "c"],
        "photo": [png(16, 16, 1), png(16, 16, 2), None],  # raw bytes; None: no part
        "scan": ["scan.pdf", "scan.pdf", "scan.pdf"],  # relative to the working directory
    })  # fmt: skip
    answers = generate(
        frame, prompt="Label {{ name }}.", schema={"type": "STRING"},
        model="gemini-2.5-flash-lite", base_url=emulator.base_url, api_key=KEY,
        media=["photo", "scan"], media_types={"scan": "application/pdf"},
    )  # fmt: skip
    assert list(answers["status"]) == ["ok", "ok", "ok"]


def test_the_example_job_runs_on_the_media_it_ships(project: Path) -> None:
    shipped = {p.name: p.read_bytes() for p in (project / "sample_inputs" / "media").iterdir()}
    made = subprocess.run([sys.executable, str(project / "sample_inputs" / "make_media.py")],
                          capture_output=True, check=False)  # fmt: skip
    assert made.returncode == 0, made.stderr
    now = {p.name: p.read_bytes() for p in (project / "sample_inputs" / "media").iterdir()}
    assert now == shipped  # the committed files are what the script makes
    job = project / "jobs" / "invoice_fields.toml"
    result = CliRunner().invoke(main, ["run", str(job), "--emulator"])
    assert result.exit_code == 0, result.output
    assert sorted(result_ids(project / "out" / "invoice_fields")) == [
        f"inv-{i}" for i in range(1, 6)
    ]


def test_validate_prescans_every_media_value(tmp_path: Path) -> None:
    rows = media_folder(tmp_path, 4)
    rows += [("gone", "media/nowhere.png", "media/doc-0.pdf"), ("dir", "media", "media/doc-1.pdf")]
    path = media_job(tmp_path, rows)
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert result.exit_code == 2
    lines = result.stderr.splitlines()
    assert any("row gone: column 'image'" in line and "no such file" in line for line in lines)
    assert any("row dir: column 'image'" in line and "is a directory" in line for line in lines)
    assert "2 media values cannot be sent" in lines[-1]
    assert "8 sendable values in image, scan" in result.stdout
