"""The price table and the cost arithmetic, against hand-computed cases.

The table is dated, so every case names its day: before 2026-12-01 gemini-2.5-flash and 2.5-pro
answer as themselves; from that day they are retired and routed.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from batchgen.emulator import KNOWN_MODELS
from batchgen.errors import JobError
from batchgen.pricing.file import load_prices
from batchgen.pricing.table import ModelPrice, PriceTable

BEFORE = date(2026, 11, 1)  # every model of the table but the shut-down ones still answers
TODAY = date(2026, 12, 2)


class DatedTable:
    """The packaged table with its day fixed, so that the old arithmetic cases read as before."""

    def __init__(self, table: PriceTable, day: date) -> None:
        self.table, self.day = table, day

    def cost(self, model: str, **counts: Any) -> float | None:
        return self.table.cost(model, **counts, at=self.day)

    def price(self, model: str) -> ModelPrice | None:
        return self.table.price(model, at=self.day)

    def resolve(self, *names: str | None) -> ModelPrice | None:
        return self.table.resolve(*names, at=self.day)


@pytest.fixture(scope="module")
def prices() -> DatedTable:
    return DatedTable(load_prices(), BEFORE)


def test_packaged_table_names_its_source_and_prices_the_emulators_models() -> None:
    table = load_prices()
    assert table.source_date == date(2026, 11, 25)
    assert "LiteLLM" in table.source and "2026-11-25" in table.describe()
    # Every period names its own source and the day it was checked.
    periods = [p for entry in table.models.values() for p in entry.periods]
    assert all(p.source and p.source_date for p in periods)
    # Every concrete model the emulator serves has a price today (a retired one at the rate of
    # the model it is routed to) or is shut down; the moving aliases have none.
    unpriced = {m for m in KNOWN_MODELS if table.price(m, at=TODAY) is None}
    aliases = {"gemini-flash-latest", "gemini-flash-lite-latest", "gemini-pro-latest"}
    shut = {"gemini-2.0-flash", "gemini-2.0-flash-lite", "gemini-3-pro-preview"}
    assert unpriced == aliases | shut
    assert {m for m in KNOWN_MODELS if table.price(m, at=BEFORE) is None} == aliases | shut
    assert table.price("gemini-2.0-flash", at=date(2026, 5, 31)) is not None  # its last day


def test_standard_rates(prices: DatedTable) -> None:
    # gemini-2.5-flash: 0.30 in, 2.50 out per 1M.  1,000 × 0.30 + 500 × 2.50 = 1,550 µ$.
    cost = prices.cost("gemini-2.5-flash", prompt=1000, output=500, thinking=0, cached=0)
    assert cost == pytest.approx(0.00155)


def test_thinking_is_billed_as_output(prices: DatedTable) -> None:
    # 1,000 × 0.30 + (500 + 2,000) × 2.50 = 300 + 6,250 µ$.
    cost = prices.cost("gemini-2.5-flash", prompt=1000, output=500, thinking=2000, cached=0)
    assert cost == pytest.approx(0.00655)


def test_cached_tokens_are_part_of_the_prompt(prices: DatedTable) -> None:
    # 600 uncached × 0.30 + 400 cached × 0.03 + 100 × 2.50 = 180 + 12 + 250 µ$.
    cost = prices.cost("gemini-2.5-flash", prompt=1000, output=100, thinking=0, cached=400)
    assert cost == pytest.approx(0.000442)


def test_long_context_tier_bills_the_whole_call_once_the_prompt_passes_200k(
    prices: PriceTable,
) -> None:
    # At 200,000 the standard rates: 200,000 × 1.25 + 1,000 × 10 = 0.25 + 0.01.
    at = prices.cost("gemini-2.5-pro", prompt=200_000, output=1000, thinking=0, cached=0)
    assert at == pytest.approx(0.26)
    # One token more and every token moves up: 150,001 × 2.50 + 50,000 × 0.25 + 1,000 × 15.
    over = prices.cost("gemini-2.5-pro", prompt=200_001, output=600, thinking=400, cached=50_000)
    assert over == pytest.approx((150_001 * 2.50 + 50_000 * 0.25 + 1_000 * 15.00) / 1e6)
    # gemini-3.1-pro-preview: 4.00 / 18.00 / 0.40 above 200k.
    three = prices.cost("gemini-3.1-pro-preview", prompt=300_000, output=0, thinking=0, cached=0)
    assert three == pytest.approx(1.2)
    # A model without the tier keeps its rates: 300,000 × 0.30.
    flat = prices.cost("gemini-2.5-flash", prompt=300_000, output=0, thinking=0, cached=0)
    assert flat == pytest.approx(0.09)


@pytest.mark.parametrize("tier", ["flex", "batch"])
def test_the_flex_and_batch_tiers_halve_the_rates(prices: DatedTable, tier: str) -> None:
    """Every rate but, in Batch Mode, cache hits: billed "at standard caching rates" there."""
    args = {"prompt": 250_000, "output": 700, "thinking": 300, "cached": 50_000}
    standard = prices.cost("gemini-2.5-pro", **args)
    cheaper = prices.cost("gemini-2.5-pro", **args, tier=tier)
    hits = 50_000 * 0.25 / 1e6 if tier == "batch" else 0.0  # the >200k cached rate, 0.25
    assert standard is not None and cheaper == pytest.approx((standard - hits) / 2 + hits)
    # gemini-3.6-flash in Batch Mode: 0.75 in / 3.75 out (the LiteLLM map's batch prices).
    million = {"prompt": 1_000_000, "output": 1_000_000, "thinking": 0, "cached": 0}
    cost = prices.cost("gemini-3.6-flash", **million, tier=tier)
    assert cost == pytest.approx(0.75 + 3.75)
    with pytest.raises(JobError, match="unknown service tier 'priority'"):
        prices.cost("gemini-3.6-flash", **million, tier="priority")


def test_an_unknown_model_is_unpriced_never_free(prices: DatedTable) -> None:
    assert prices.price("my-tuned-model") is None
    assert prices.cost("my-tuned-model", prompt=10, output=10, thinking=0, cached=0) is None
    assert prices.cost("gemini-flash-latest", prompt=10, output=10, thinking=0, cached=0) is None


@pytest.mark.parametrize(
    ("name", "priced_as"),
    [
        ("models/gemini-2.5-flash", "gemini-2.5-flash"),
        ("gemini-2.5-flash-001", "gemini-2.5-flash"),
        ("gemini-2.5-flash-preview-09-2025", "gemini-2.5-flash"),
        ("models/gemini-2.5-flash-lite-preview-06-17", "gemini-2.5-flash-lite"),
        ("gemini-3-pro-preview-11-2025", "gemini-3-pro-preview"),
        # A word in the suffix names another model with its own price: no fallback.
        ("gemini-2.5-flash-image", None),
        ("gemini-2.5-flash-preview-tts", None),
        ("gemini-2.5-flash-native-audio-preview-09-2025", None),
        ("gemini-2.0-flash-thinking-exp-01-21", None),
        ("gemini-2.5", None),
    ],
)
def test_model_names_fall_back_to_their_release_only_by_version_parts(
    prices: DatedTable, name: str, priced_as: str | None
) -> None:
    assert prices.table.key(name) == priced_as


def test_resolve_prices_the_model_that_answered_before_the_one_asked(prices: DatedTable) -> None:
    def name(*names: str | None) -> str | None:
        price = prices.resolve(*names)
        return price.name if price else None

    # The model_version that answered wins, exactly or by its version; then the model asked for.
    assert name("gemini-2.5-pro", "gemini-pro-latest") == "gemini-2.5-pro"
    assert name("gemini-2.5-flash-002", "gemini-2.5-pro") == "gemini-2.5-flash"
    assert name("my-tuned-model-7", "gemini-2.5-pro") == "gemini-2.5-pro"
    assert name(None, "gemini-2.5-flash-002") == "gemini-2.5-flash"
    assert name(None, None) is None


def test_override_file_adds_and_replaces_models(tmp_path: Path) -> None:
    override = tmp_path / "prices.toml"
    override.write_text(
        'source = "our contract"\n'
        "source_date = 2026-11-01\n"
        '[models."my-tuned-model"]\ninput = 1.0\noutput = 4.0\n'
        '[models."models/gemini-2.5-flash"]\ninput = 0.2\noutput = 2.0\ncached = 0.02\n'
        "batch_discount = 0.25\n"
    )
    prices = load_prices(override)
    # Without a cache rate cached tokens cost the input rate: 1,000 × 1.0 + 1,000 × 4.0.
    cost = prices.cost("my-tuned-model", prompt=1000, output=1000, thinking=0, cached=500)
    assert cost == pytest.approx(0.005)
    flash = prices.price("gemini-2.5-flash", at=BEFORE)
    assert flash is not None and (flash.input, flash.batch.input) == (0.2, 0.2 * 0.75)
    assert (flash.start, flash.end, flash.source) == (None, None, "our contract")
    assert prices.price("gemini-2.5-pro", at=BEFORE) is not None  # the packaged models stay
    assert prices.source_date == date(2026, 11, 1) and "our contract" in prices.source


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[models.x\n", "invalid TOML"),
        ('[models."x"]\ninput = 1\noutput = 2\ninptu = 3\n', "unknown key 'models.\"x\".inptu'"),
        ('[models."x"]\ninput = -1\noutput = 2\n', 'models."x".input must be a price >= 0'),
        ('[models."x"]\ninput = "cheap"\noutput = 2\n', 'models."x".input must be a price'),
        ('[models."x"]\noutput = 2\n', "models.\"x\" needs 'input'"),
        ('[models."x"]\ninput = 1\noutput = 2\nbatch_discount = 50\n', "must be a fraction"),
        (
            '[models."x"]\ninput = 1\noutput = 2\nlong_context = { input = 2, output = 3 }\n',
            'models."x".long_context.threshold must be a whole number',
        ),
        ("currency = 'EUR'\n", "unknown key 'currency'"),
        ("source_date = 'yesterday'\n", "source_date must be a date"),
    ],
)
def test_a_bad_price_file_names_the_file_and_the_key(
    tmp_path: Path, text: str, expected: str
) -> None:
    override = tmp_path / "mine.toml"
    override.write_text(text)
    with pytest.raises(JobError) as info:
        load_prices(override)
    message = str(info.value)
    assert message.startswith(f"{override}: ") and expected in message
    assert "\n" not in message


def test_a_missing_price_file_is_a_job_error(tmp_path: Path) -> None:
    with pytest.raises(JobError, match=r"missing\.toml: cannot read the price file"):
        load_prices(tmp_path / "missing.toml")


counts = st.integers(min_value=0, max_value=400_000)


@given(st.lists(st.tuples(counts, counts, counts, counts), min_size=1, max_size=20), st.booleans())
def test_vectorised_costs_equal_one_call_at_a_time(
    calls: list[tuple[int, int, int, int]], batch: bool
) -> None:
    price = load_prices().price("gemini-2.5-pro", at=BEFORE)
    assert price is not None
    tier = "batch" if batch else "standard"
    calls = [(p, o, t, min(c, p)) for p, o, t, c in calls]  # cached is part of the prompt
    arrays = [np.array(column, np.int64) for column in zip(*calls, strict=True)]
    one_by_one = [
        price.cost(prompt=p, output=o, thinking=t, cached=c, tier=tier) for p, o, t, c in calls
    ]
    assert price.costs(*arrays, tier=tier) == pytest.approx(one_by_one)
