"""Dated prices, tiers and the model lifecycle: reports over ledgers that cross a price change,
the warnings of validate/run/estimate, the prices command, and --max-cost on current models."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, date, datetime
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from batchgen.cli.main import _describe, main
from batchgen.cli.render import format_report
from batchgen.errors import JobError
from batchgen.pricing.budget import Budget
from batchgen.pricing.file import load_prices
from batchgen.pricing.table import lifecycle_warning
from batchgen.reports.report import report as build_report
from batchgen.run.runner import RunSummary
from tests.helpers.ledger import call, write_output

MILLION = 1_000_000
CURRENT = (
    "gemini-3.8-flash", "gemini-3.7-flash", "gemini-3.6-flash", "gemini-3.5-flash",
    "gemini-3.5-flash-lite", "gemini-3.1-flash-lite", "gemini-3.1-pro-preview", "gemini-4-argon",
    "gemini-2.5-flash-lite",
)  # fmt: skip


def at(day: str, hour: int = 12) -> datetime:
    return datetime.fromisoformat(day).replace(hour=hour, tzinfo=UTC)


def one_call(
    model: str, when: datetime, row: str, version: str | None = None, prompt: int = MILLION
) -> dict[str, object]:
    """A call of 1M prompt and 1M output tokens: its cost is input + output rate."""
    run = when.strftime("%Y%m%dT%H%M%S") + "-abcdef"
    return call(run, "j", row, 1, model, when, prompt=prompt, output=MILLION, version=version)


def test_a_ledger_across_new_year_prices_each_day_at_its_own_rate(tmp_path: Path) -> None:
    flash = "gemini-3.8-flash"
    calls = [
        one_call(flash, at("2026-12-31", 23), "a"),  # the last hour at 0.75 / 3.75
        one_call(flash, at("2027-01-01", 0), "b"),  # the first at 1.50 / 7.50
        one_call(flash, at("2027-01-01", 9), "c"),
    ]
    out = write_output(tmp_path / "o", "j", flash, {"20261231T230000-abcdef": calls})
    days = build_report([out], by="day").groups.set_index("day")["cost_usd"]
    assert days["2026-12-31"] == pytest.approx(0.75 + 3.75)
    assert days["2027-01-01"] == pytest.approx(2 * (1.50 + 7.50))
    assert build_report([out]).total["cost_usd"] == pytest.approx(4.50 + 18.00)


def test_gemini_4_argon_doubles_on_the_first_of_december(tmp_path: Path) -> None:
    argon = "gemini-4-argon"
    calls = [one_call(argon, at("2026-11-30", 23), "a"), one_call(argon, at("2026-12-01", 1), "b")]
    out = write_output(tmp_path / "o", "j", argon, {"20261130T230000-abcdef": calls})
    days = build_report([out], by="day").groups.set_index("day")["cost_usd"]
    assert days["2026-11-30"] == pytest.approx(2.00 + 10.00)
    assert days["2026-12-01"] == pytest.approx(4.00 + 20.00)


def test_the_tier_argument_prices_flex_and_batch_at_half() -> None:
    """Flex halves every rate; Batch halves all but cache hits, billed "at standard caching
    rates" in Batch Mode (the Batch API page)."""
    table = load_prices()
    tokens = {"prompt": 300_000, "output": 2_000, "thinking": 1_000, "cached": 100_000}
    for model in CURRENT:
        day = date(2026, 12, 2)
        standard = table.cost(model, **tokens, at=day)
        prompt = {"prompt": 300_000, "output": 0, "thinking": 0}
        with_hits = table.cost(model, **prompt, cached=100_000, at=day)
        uncached = table.cost(model, **prompt, cached=0, at=day)
        assert standard is not None and with_hits is not None and uncached is not None, model
        hits = with_hits - uncached * 2 / 3  # the 100k cached tokens' part (long context too)
        flex = table.cost(model, **tokens, tier="flex", at=day)
        assert flex == pytest.approx(standard / 2), model
        batch = table.cost(model, **tokens, tier="batch", at=day)
        assert batch == pytest.approx((standard - hits) / 2 + hits), model


def test_report_names_the_model_that_answered_and_prices_it(tmp_path: Path) -> None:
    # Asked gemini-2.5-flash after its retirement; gemini-3.8-flash-001 answered (its 2026 rate).
    asked, answered = "gemini-2.5-flash", "gemini-3.8-flash-001"
    calls = [one_call(asked, at("2026-12-02"), r, version=answered) for r in ("a", "b")]
    calls.append(one_call(asked, at("2026-11-30"), "c"))  # before: answered as itself
    out = write_output(tmp_path / "o", "j", asked, {"20261202T120000-abcdef": calls})
    rep = build_report([out], by="day")
    days = rep.groups.set_index("day")["cost_usd"]
    assert days["2026-12-02"] == pytest.approx(2 * (0.75 + 3.75))
    assert days["2026-11-30"] == pytest.approx(0.30 + 2.50)
    assert rep.answered == ((asked, answered, 2),)
    text = format_report(rep)
    assert text.splitlines()[-1] == (
        "answered by another model than asked: gemini-2.5-flash → gemini-3.8-flash-001 (2 calls)"
    )
    assert json.loads(format_report(rep, "json"))["answered_by"] == [
        {"asked": asked, "answered": answered, "calls": 2}
    ]


def test_a_retired_model_answering_as_itself_is_billed_at_its_successors_rate(
    tmp_path: Path,
) -> None:
    asked = "gemini-2.5-pro"  # routed to gemini-3.8-flash from 2026-12-01
    short = 100_000  # under 2.5 Pro's long-context threshold
    calls = [
        one_call(asked, at("2026-11-30"), "a", prompt=short),
        one_call(asked, at("2026-12-01"), "b", prompt=short),
    ]
    out = write_output(tmp_path / "o", "j", asked, {"20261130T120000-abcdef": calls})
    rep = build_report([out], by="day")
    days = rep.groups.set_index("day")["cost_usd"]
    assert days["2026-11-30"] == pytest.approx(0.1 * 1.25 + 10.00)
    assert days["2026-12-01"] == pytest.approx(0.1 * 0.75 + 3.75)
    assert any("retired on 2026-12-01" in w and "'gemini-3.8-flash'" in w for w in rep.warnings)
    assert rep.answered == ()  # modelVersion named the model asked for


def test_the_run_summary_says_which_model_answered() -> None:
    summary = RunSummary(output=Path("out"))
    summary.answered_by = Counter({"gemini-3.8-flash-001": 3})
    assert _describe(summary, "gemini-3.8-flash").count("answered by") == 0  # its own version
    line = _describe(summary, "gemini-2.5-flash").splitlines()[-1]
    assert line == "answered by gemini-3.8-flash-001 (3 calls); asked gemini-2.5-flash"


@pytest.mark.parametrize(
    ("model", "day", "expected"),
    [
        (
            "gemini-2.5-flash",
            date(2026, 12, 2),
            "model gemini-2.5-flash retired on 2026-12-01; calls are routed to "
            "gemini-3.5-flash-lite and billed at its rate; set model.name to a current model "
            "(batchgen prices lists them)",
        ),
        (
            "gemini-3.1-flash-lite",
            date(2027, 4, 10),
            "model gemini-3.1-flash-lite retires on 2027-05-07 (in 27 days); calls are then "
            "refused (the id is shut down); set model.name to a current model (batchgen prices "
            "lists them)",
        ),
        ("gemini-3.1-flash-lite", date(2027, 4, 6), None),  # 31 days ahead: not yet
        ("gemini-3.8-flash", date(2026, 12, 2), None),
        ("my-tuned-model", date(2026, 12, 2), None),
    ],
)
def test_lifecycle_warning(model: str, day: date, expected: str | None) -> None:
    assert lifecycle_warning(model, day, load_prices()) == expected


def cli(*args: str, today: date) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args), obj={"today": today})
    return result.exit_code, result.stdout, result.stderr


def test_validate_run_and_estimate_warn_about_the_jobs_model(project: Path) -> None:
    job = str(project / "jobs" / "cookie_recipes.toml")
    day = date(2026, 12, 2)
    code, out, err = cli("validate", job, "--model", "gemini-2.5-flash", today=day)
    assert code == 0 and out.startswith("ok: ")
    assert err == f"warning: {lifecycle_warning('gemini-2.5-flash', day, load_prices())}\n"
    code, _, err = cli("validate", job, "--model", "gemini-3.1-flash-lite", today=date(2027, 5, 1))
    assert err.startswith("warning: model gemini-3.1-flash-lite retires on 2027-05-07 (in 6 days)")
    code, _, err = cli("validate", job, today=day)  # gemini-3.8-flash: current
    assert code == 0 and err == ""

    code, out, err = cli("estimate", job, "--offline", "--model", "gemini-2.5-pro", today=day)
    assert code == 0 and err.startswith("warning: model gemini-2.5-pro retired on 2026-12-01;")
    assert "priced as gemini-3.8-flash at its rates of 2026-12-02" in out  # where it is routed
    code, out, err = cli("run", job, "--emulator", "--limit", "1", "--model", "gemini-2.5-flash",
                         "--quiet", today=day)  # fmt: skip
    assert code == 0 and "warning: model gemini-2.5-flash retired on 2026-12-01" in err


def test_prices_command_lists_periods_tiers_and_status() -> None:
    code, out, _ = cli("prices", today=date(2026, 12, 2))
    lines = out.splitlines()
    assert code == 0 and lines[0].split()[:4] == ["model", "status", "from", "to"]
    flash = [line.split() for line in lines if line.startswith("gemini-3.8-flash ")]
    assert flash == [
        ["gemini-3.8-flash", "current", "2026-09-02", "2026-12-31", "0.75", "3.75", "0.075",
         "0.75", "0.375", "/", "1.875", "0.375", "/", "1.875"],
        ["gemini-3.8-flash", "current", "2027-01-01", "1.50", "7.50", "0.15", "1.50",
         "0.75", "/", "3.75", "0.75", "/", "3.75"],
    ]  # fmt: skip
    retired = next(line for line in lines if line.startswith("gemini-2.5-flash "))
    assert "retired 2026-12-01 → gemini-3.5-flash-lite" in retired
    assert lines[-1].startswith("prices: USD per 1M tokens")

    code, out, _ = cli("prices", "--model", "gemini-4-argon-001", "--at", "2026-12-01",
                       "--format", "json", today=date(2026, 12, 2))  # fmt: skip
    (row,) = json.loads(out)["prices"]
    assert [row[k] for k in ("model", "from", "to", "status")] == [
        "gemini-4-argon", "2026-12-01", None, "current"
    ]  # fmt: skip
    assert row["standard"]["input"] == 4.00 and row["batch"]["output"] == 10.00
    assert row["source"] and row["source_date"] == "2026-11-25"

    # A retired model on a day it is routed: the rates it is billed at, and where it went.
    code, out, _ = cli("prices", "--model", "gemini-2.5-flash", "--at", "2026-12-05",
                       "--format", "json", today=date(2026, 12, 2))  # fmt: skip
    (row,) = json.loads(out)["prices"]
    billed = (row["status"], row["billed_as"], row["standard"]["output"])
    assert billed == ("retired", "gemini-3.5-flash-lite", 2.50)
    code, _, err = cli("prices", "--model", "gemini-9", today=date(2026, 12, 2))
    assert code == 2 and err.startswith("error: --model gemini-9: not in the price table")


def test_an_old_single_rate_override_still_loads_and_keeps_the_lifecycle(tmp_path: Path) -> None:
    override = tmp_path / "prices.toml"
    override.write_text(
        'source = "our contract"\nbatch_discount = 0.25\n'
        '[models."gemini-2.5-flash"]\ninput = 0.2\noutput = 2.0\n'
        '[models."my-tuned-model"]\ninput = 1.0\noutput = 4.0\ncached = 0.1\n'
    )
    table = load_prices(override)
    tuned = table.price("my-tuned-model", at=date(2030, 1, 1))  # one open period
    assert tuned is not None and (tuned.start, tuned.end) == (None, None)
    assert tuned.batch.input == pytest.approx(0.75) and tuned.flex.input == pytest.approx(0.5)
    flash = table.price("gemini-2.5-flash", at=date(2026, 11, 1))
    assert flash is not None and flash.input == 0.2
    life = table.lifecycle("gemini-2.5-flash")
    assert life is not None and life.routed_to == "gemini-3.5-flash-lite"
    # From its retirement on, it is billed at the model it is routed to, override or not.
    routed = table.price("gemini-2.5-flash", at=date(2026, 12, 2))
    assert routed is not None and routed.name == "gemini-3.5-flash-lite"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '[[models."x".periods]]\nfrom = 2026-01-01\ninput = 1\noutput = 2\n'
            '[[models."x".periods]]\nfrom = 2026-06-01\ninput = 2\noutput = 4\n',
            "the period from 2026-06-01 overlaps the one from 2026-01-01",
        ),
        (
            '[[models."x".periods]]\nfrom = 2026-02-01\nto = 2026-01-01\ninput = 1\noutput = 2\n',
            'models."x".periods[0]: to (2026-01-01) is before from (2026-02-01)',
        ),
        (
            '[models."x"]\ninput = 1\noutput = 2\nflex = "half"\n',
            'models."x".flex must be a factor',
        ),
        ('[models."x"]\nstatus = "gone"\ninput = 1\noutput = 2\n', 'models."x".status must be'),
        ('[models."x"]\nstatus = "retired"\ninput = 1\noutput = 2\n', "needs its date"),
        (
            '[models."x"]\ninput = 1\noutput = 2\nbatch = { input = 0.5, output = 1, flex = 2 }\n',
            "unknown key 'models.\"x\".batch.flex'",
        ),
        (
            '[[models."x".periods]]\ninput = 1\noutput = 2\n[[models."x".periods]]\ninput = -1\n',
            'models."x".periods[1].input must be a price >= 0 (USD per 1M), not -1',
        ),
        (
            '[models."x"]\ninput = 1\noutput = 2\n[[models."x".periods]]\ninput = 1\noutput = 2\n',
            "in periods or on the model, not both",
        ),
        (
            '[models."x"]\ninput = 1\noutput = 2\n'
            "long_context = { threshold = 10, input = 2, output = 3 }\n"
            "batch = { input = 0.5, output = 1 }\n",
            'models."x".batch: the model has a long_context tier',
        ),
    ],
)
def test_a_bad_dated_price_file_names_the_file_and_the_key(
    tmp_path: Path, text: str, expected: str
) -> None:
    override = tmp_path / "mine.toml"
    override.write_text(text)
    with pytest.raises(JobError) as info:
        load_prices(override)
    assert str(info.value).startswith(f"{override}: ") and expected in str(info.value)


def test_a_tier_given_as_prices(tmp_path: Path) -> None:
    override = tmp_path / "mine.toml"
    override.write_text(
        '[[models."x".periods]]\ninput = 1\noutput = 2\nflex = 0.4\n'
        "batch = { input = 0.5, output = 1, cached = 0.9 }\n"
    )
    table = load_prices(override)
    tokens = {"prompt": MILLION, "output": MILLION, "thinking": 0, "cached": MILLION // 2}
    assert table.cost("x", **tokens, tier="flex") == pytest.approx(0.4 * (0.5 + 0.5 + 2))
    assert table.cost("x", **tokens, tier="batch") == pytest.approx(0.25 + 0.45 + 1)


@pytest.mark.parametrize("model", CURRENT)
def test_max_cost_accepts_every_current_model(model: str) -> None:
    budget = Budget(load_prices(), model, cap=1.0, today=lambda: date(2026, 12, 2))
    assert budget.priced


def test_max_cost_on_a_current_model_through_the_cli(project: Path) -> None:
    job = str(project / "jobs" / "cookie_recipes.toml")
    code, out, err = cli("run", job, "--emulator", "--model", "gemini-4-argon", "--max-cost",
                         "0.0001", "--quiet", today=date(2026, 12, 2))  # fmt: skip
    assert code == 6, err
    assert "error: --max-cost 0.0001 reached" in err and "cost $0.0" in out


def test_a_tier_column_in_the_ledger_prices_each_call_at_its_tier() -> None:
    # The ledger has no tier column yet; pricing reads one when a later ledger carries it.
    from batchgen.reports.report import _price

    flash = "gemini-3.8-flash"
    rows = [one_call(flash, at("2026-12-02"), r) for r in "abcde"]
    calls = pd.DataFrame(rows).assign(
        tier=["standard", "flex", "SERVICE_TIER_BATCH", None, "priority"]
    )
    _, notes = _price(calls, load_prices())
    full = 0.75 + 3.75
    assert calls["cost_usd"].tolist()[:4] == pytest.approx([full, full / 2, full / 2, full])
    assert pd.isna(calls["cost_usd"].iloc[4])
    assert notes == ["no price for the 'priority' service tier: its calls are unpriced"]
