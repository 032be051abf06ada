"""Cost truth for media: the ledger's prompt split by modality, audio at its own rate in report,
budget and estimate, and old ledgers and price files still read."""

from __future__ import annotations

import asyncio
import base64
import json
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from batchgen.cli import main
from batchgen.cli.render import format_estimate
from batchgen.emulator import EmulatorConfig, EmulatorServer, EmulatorThread
from batchgen.errors import InputError, JobError
from batchgen.gemini.answers import parse_response
from batchgen.gemini.client import GeminiClient
from batchgen.gemini.request import RequestBuilder
from batchgen.gemini.transport import Transport
from batchgen.input.media_tokens import media_tokens
from batchgen.job.spec import Overrides, load_job
from batchgen.pricing.budget import Budget
from batchgen.pricing.file import load_prices, parse_price_file
from batchgen.records import Answer, Billed, InputRow, Modalities, Usage
from batchgen.reports.estimate import estimate_job, rough_tokens
from batchgen.reports.report import report
from batchgen.store.output import USAGE_SCHEMA
from tests.helpers import media
from tests.helpers.emulator_calls import StartEmulator
from tests.helpers.jobs import item_job
from tests.helpers.paths import SEED_COPY

KEY = "test-key-123456"
LITE = "gemini-2.5-flash-lite"  # input 0.10, audio 0.30, output 0.40 per 1M
DAY = datetime(2026, 12, 2, 12, tzinfo=UTC)
# A media answer written by hand after the API's usageMetadata (docs: promptTokensDetails and
# cacheTokensDetails by modality): an image, 30 s of audio and some text, part of it cached.
MEDIA_RESPONSE: dict[str, Any] = {
    "candidates": [{"content": {"parts": [{"text": '{"label": "a call"}'}], "role": "model"},
                    "finishReason": "STOP", "index": 0}],
    "usageMetadata": {
        "promptTokenCount": 1526, "candidatesTokenCount": 6, "totalTokenCount": 1532,
        "cachedContentTokenCount": 300,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 50},
                                {"modality": "IMAGE", "tokenCount": 516},
                                {"modality": "AUDIO", "tokenCount": 960}],
        "cacheTokensDetails": [{"modality": "AUDIO", "tokenCount": 300}],
    },
    "modelVersion": LITE,
}  # fmt: skip


def test_the_seed_and_a_media_answer_split_the_prompt_by_modality() -> None:
    seed = parse_response(json.loads(SEED_COPY.read_text())["response"])
    assert seed.usage.prompt_details == Modalities(text=15) and seed.usage.cached_details is None
    usage = parse_response(MEDIA_RESPONSE).usage
    assert usage.prompt_details == Modalities(text=50, image=516, audio=960)
    assert usage.cached_details == Modalities(audio=300)
    assert (usage.audio, usage.cached_audio) == (960, 300)


@pytest.mark.parametrize(
    "details",
    [None, [], "TEXT", [{"modality": "AUDIO", "tokenCount": -1}], [7]],
)
def test_unreadable_details_lose_the_split_never_the_answer(details: object) -> None:
    body = json.loads(json.dumps(MEDIA_RESPONSE))
    body["usageMetadata"]["promptTokensDetails"] = details
    answer = parse_response(body)
    assert answer.text == '{"label": "a call"}' and answer.usage.prompt == 1526
    assert answer.usage.prompt_details is None


def test_an_unknown_modality_counts_as_text() -> None:
    body = json.loads(json.dumps(MEDIA_RESPONSE))
    body["usageMetadata"]["promptTokensDetails"].append({"modality": "HOLOGRAM", "tokenCount": 4})
    assert parse_response(body).usage.prompt_details == Modalities(54, 516, 960)


# --- the ledger and report -----------------------------------------------------------------


def _ledger(out: Path, rows: list[dict[str, Any]], schema: pa.Schema = USAGE_SCHEMA) -> Path:
    out.mkdir(parents=True)
    (out / "job.json").write_text(json.dumps({"job": "calls", "parts": {"model": LITE}}))
    (out / "usage").mkdir()
    pq.write_table(
        pa.Table.from_pylist(rows, schema),
        out / "usage" / "part-20261202T120000-abcdef-00001.parquet",
    )
    return out


def _billed(usage: Usage, row: str = "r0") -> dict[str, Any]:
    answer = Answer("{}", "STOP", None, usage, LITE, "id", True)
    return Billed("20261202T120000-abcdef", "calls", row, 1, LITE, answer, "ok", DAY).to_row()


def test_report_prices_audio_at_its_rate(tmp_path: Path) -> None:
    usage = parse_response(MEDIA_RESPONSE).usage
    out = _ledger(tmp_path / "out", [_billed(usage)])
    rep = report([out])
    # uncached: 1226 tokens, of which 660 audio (960 - 300 cached); cached 300; output 6
    text, audio, cached, output = 1226 - 660, 660, 300, 6
    expected = (text * 0.10 + audio * 0.30 + cached * 0.01 + output * 0.40) / 1e6
    assert rep.total["cost_usd"] == pytest.approx(expected)
    assert rep.modalities == {"text": 50, "image": 516, "audio": 960, "video": 0, "document": 0,
                              "unsplit": 0}  # fmt: skip
    result = CliRunner().invoke(main, ["report", str(out)])
    assert result.exit_code == 0
    assert "prompt by modality: text 50 · image 516 · audio 960 (audio at the model's audio" in (
        result.stdout
    )


def test_an_old_ledger_without_the_new_columns_still_reports(tmp_path: Path) -> None:
    # as batchgen wrote it before the tier and the modality columns existed
    split = [f"{k}_{m}_tokens" for k in ("prompt", "cached") for m in Modalities().as_dict()]
    old = pa.schema([f for f in USAGE_SCHEMA if f.name not in ("tier", *split)])
    assert "tier" not in old.names and "prompt_audio_tokens" not in old.names
    assert "prompt_tokens" in old.names and "cached_tokens" in old.names
    row = {k: v for k, v in _billed(Usage(1000, 10, 0, 0, 1010)).items() if k in old.names}
    out = _ledger(tmp_path / "old", [row], old)
    rep = report([out])
    assert rep.total["cost_usd"] == pytest.approx((1000 * 0.10 + 10 * 0.40) / 1e6)
    assert rep.modalities == {} and rep.warnings == ()
    for command in (["report", str(out)], ["status", str(out)]):
        result = CliRunner().invoke(main, command)
        assert result.exit_code == 0, result.output
    mixed = _ledger(tmp_path / "mixed", [row], old)  # an old part beside a new one
    new = pa.Table.from_pylist([_billed(parse_response(MEDIA_RESPONSE).usage, "r1")], USAGE_SCHEMA)
    pq.write_table(new, mixed / "usage" / "part-20261203T120000-abcdef-00001.parquet")
    rep = report([mixed])
    assert rep.total["requests"] == 2 and rep.modalities["unsplit"] == 1000


# --- prices --------------------------------------------------------------------------------


def test_the_price_table_has_dated_audio_rates() -> None:
    table = load_prices()
    rates = {m: table.resolve(m, at=date(2026, 11, 1)) for m in
             ("gemini-2.5-flash", LITE, "gemini-3-flash-preview", "gemini-3.8-flash")}  # fmt: skip
    audio = {m: (p.standard.audio_rate, p.input) for m, p in rates.items() if p is not None}
    assert audio == {
        "gemini-2.5-flash": (1.00, 0.30),
        LITE: (0.30, 0.10),
        "gemini-3-flash-preview": (1.00, 0.50),
        "gemini-3.8-flash": (0.75, 0.75),  # no audio rate published: the input rate
    }
    assert rates[LITE] is not None and rates[LITE].rates("batch").audio_rate == 0.15
    assert "audio rate checked 2026-12-04" in rates[LITE].source


def test_price_files_take_an_audio_rate_and_old_ones_still_load(tmp_path: Path) -> None:
    new = parse_price_file(
        '[models."m"]\ninput = 1.0\noutput = 2.0\naudio = 3.0\n'
        "flex = { input = 0.5, output = 1.0, audio = 2.5 }\n",
        tmp_path / "p.toml",
    )
    price = new.models["m"].periods[0]
    assert (price.standard.audio, price.flex.audio, price.batch.audio) == (3.0, 2.5, 1.5)
    heard = price.cost(prompt=1_000_000, output=0, thinking=0, cached=0, audio=400_000)
    assert heard == pytest.approx(0.6 + 1.2)
    old = parse_price_file('[models."m"]\ninput = 1.0\noutput = 2.0\n', tmp_path / "old.toml")
    price = old.models["m"].periods[0]
    assert price.standard.audio is None and price.standard.audio_rate == 1.0
    assert price.cost(prompt=1_000_000, output=0, thinking=0, cached=0, audio=400_000) == 1.0
    with pytest.raises(JobError, match=r"bad\.toml.*audio") as info:
        parse_price_file(
            '[models."m"]\ninput = 1.0\noutput = 2.0\naudio = -1\n', tmp_path / "bad.toml"
        )
    assert "\n" not in str(info.value)


async def test_the_budget_holds_what_media_cost() -> None:
    budget = Budget(load_prices(), LITE, cap=1.0, today=lambda: DAY.date())
    # 1M audio tokens: $0.30 at the audio rate, not $0.10
    held = await budget.reserve(1000)
    heard = Usage(prompt=1_000_000, output=100, prompt_details=Modalities(audio=1_000_000))
    budget.settle(held, heard)
    answer = 100 * 0.40 / 1e6
    assert budget.spent == pytest.approx(0.30 + answer)
    # the next call's text is 1,000 tokens, but the prompts so far cost $0.30 each: held
    assert await budget.reserve(1000) == pytest.approx(0.30 + answer)
    second = asyncio.ensure_future(budget.reserve(1000))
    await asyncio.sleep(0)
    assert second.done()  # 0.30 spent + 0.30 held + 0.30 fits under $1
    third = asyncio.ensure_future(budget.reserve(1000))
    await asyncio.sleep(0)
    assert not third.done()  # 0.30 + 0.60 held + 0.30 would not: it waits for a settle
    third.cancel()


# --- the emulator and estimate -------------------------------------------------------------


async def test_the_emulator_reports_media_by_modality_in_answers_and_counts(
    tmp_path: Path,
) -> None:
    refs = [("image/png", media.png(1024, 768)), ("audio/wav", media.wav(30)),
            ("application/pdf", media.pdf(2))]  # fmt: skip
    parts = [{"inlineData": {"mimeType": m, "data": base64.b64encode(d).decode()}} for m, d in refs]
    body = {"contents": [{"role": "user", "parts": [*parts, {"text": "Label these files."}]}]}
    async with EmulatorServer() as server, aiohttp.ClientSession() as session:
        job = load_job(item_job(tmp_path, 1), Overrides(base_url=server.base_url))
        client = GeminiClient(Transport(session, job.model, KEY, 10))
        answer = parse_response((await client.generate(json.dumps(body).encode()))[0])
        count = await client.count_prompt(json.dumps({"contents": body["contents"]}).encode())
    offline = Modalities(
        text=rough_tokens("Label these files."),
        image=media_tokens(refs[0][1], "image/png"),
        audio=media_tokens(refs[1][1], "audio/wav"),
        document=media_tokens(refs[2][1], "application/pdf"),
    )
    assert offline == Modalities(4, 516, 960, 0, 516)  # the published rules
    assert answer.usage.prompt_details == offline and answer.usage.prompt == offline.total
    assert count.details == offline and count.total == offline.total


@pytest.fixture
def emulator(emulator_factory: StartEmulator) -> EmulatorThread:
    return emulator_factory(EmulatorConfig(api_keys=frozenset({KEY})))


def _media_of(folder: Path) -> Any:
    clip = folder / "clip.wav"
    clip.write_bytes(media.wav(30))
    photo = media.png(1024, 768)

    def of(row: InputRow) -> list[tuple[str, Path | bytes]]:
        return [("image/png", photo), ("audio/wav", clip)]

    return of


@pytest.mark.parametrize("offline", [False, True], ids=["countTokens", "offline"])
def test_estimate_counts_and_prices_media_by_modality(
    tmp_path: Path, emulator: EmulatorThread, offline: bool
) -> None:
    job = load_job(item_job(tmp_path, 10), Overrides(base_url=emulator.base_url))
    plain = estimate_job(job, api_key=KEY, offline=offline, at=DAY.date())
    est = estimate_job(job, api_key=KEY, offline=offline, at=DAY.date(), media=_media_of(tmp_path))
    assert est.prompt_by_modality["image"] == 10 * 516
    assert est.prompt_by_modality["audio"] == 10 * 960
    assert est.prompt_tokens == plain.prompt_tokens + 10 * (516 + 960)
    text_only = {"text": plain.prompt_tokens, "image": 0, "audio": 0, "video": 0, "document": 0}
    assert plain.prompt_by_modality == ({} if offline else {**text_only, "unsplit": 0})
    # the media's share of the cost: images at the input rate, audio at three times it
    added = (est.cost_low or 0) - (plain.cost_low or 0)
    assert added == pytest.approx(10 * (516 * 0.10 + 960 * 0.30) / 1e6)
    assert "image 5,160 · audio 9,600" in format_estimate(est)


def test_a_media_estimate_matches_what_the_emulator_bills(
    tmp_path: Path, emulator: EmulatorThread
) -> None:
    job = load_job(item_job(tmp_path, 6), Overrides(base_url=emulator.base_url))
    est = estimate_job(job, api_key=KEY, offline=True, media=_media_of(tmp_path), at=DAY.date())
    builder = RequestBuilder(job)
    clip = (tmp_path / "clip.wav").read_bytes()
    photo = media.png(1024, 768)

    async def bill() -> int:
        total = 0
        async with aiohttp.ClientSession() as session:
            client = GeminiClient(Transport(session, job.model, KEY, 10))
            for i in range(6):
                request = json.loads(builder.body(f"Describe item-{i:03d} in a few words."))
                request["contents"][0]["parts"][:0] = [
                    {"inlineData": {"mimeType": mime, "data": base64.b64encode(data).decode()}}
                    for mime, data in (("image/png", photo), ("audio/wav", clip))
                ]
                payload, _ = await client.generate(json.dumps(request).encode())
                total += parse_response(payload).usage.prompt
        return total

    billed = asyncio.run(bill())
    assert est.prompt_tokens == pytest.approx(billed, rel=0.15)


def test_a_run_writes_the_split_into_the_ledger(tmp_path: Path, emulator: EmulatorThread) -> None:
    from batchgen.run.runner import RunOptions, run_job

    job = load_job(item_job(tmp_path, 3), Overrides(base_url=emulator.base_url))
    run_job(job, RunOptions(api_key=KEY))
    ledger = pq.read_table(job.output.directory / "usage").to_pandas()
    assert len(ledger) == 3
    assert (ledger["prompt_text_tokens"] == ledger["prompt_tokens"]).all()  # text jobs: TEXT
    assert ledger["prompt_audio_tokens"].eq(0).all() and ledger["cached_text_tokens"].isna().all()


def test_unreadable_media_in_an_offline_estimate_name_the_row(
    tmp_path: Path, emulator: EmulatorThread
) -> None:
    job = load_job(item_job(tmp_path, 2), Overrides(base_url=emulator.base_url))

    def broken(row: InputRow) -> list[tuple[str, Path | bytes]]:
        return [("image/png", b"not an image")]

    with pytest.raises(InputError, match=r"^row r0: image: not a PNG, JPEG, GIF or WebP header$"):
        estimate_job(job, offline=True, media=broken)
