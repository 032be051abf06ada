"""The emulator's latency model and its outage window: drawn and judged without sleeping."""

from __future__ import annotations

import statistics
from typing import Any

import pytest
from click.testing import CliRunner

from batchgen.cli import main
from batchgen.emulator import EmulatorConfig
from batchgen.emulator.latency import LatencyModel
from tests.helpers.emulator_calls import FLASH, MakeClient, ask, call

PRO = "gemini-2.5-pro"


def test_lognormal_latency_has_the_median_and_the_spread_asked_for() -> None:
    model = LatencyModel(EmulatorConfig(latency_median_ms=2000, latency_sigma=0.5))
    draws = [model.seconds(FLASH) for _ in range(4000)]
    assert statistics.median(draws) == pytest.approx(2.0, rel=0.05)
    # With sigma 0.5, one answer in ten takes more than exp(0.5 * 1.2816) = 1.9x the median.
    p90 = statistics.quantiles(draws, n=10)[-1]
    assert p90 == pytest.approx(2.0 * 1.897, rel=0.08)
    assert min(draws) > 0


def test_latency_is_seeded_and_can_differ_per_model() -> None:
    config = EmulatorConfig(
        latency_ms=100, latency_median_ms=500, latency_sigma=1.0, model_latency={PRO: (9000, 0)}
    )
    first, again = LatencyModel(config), LatencyModel(config)
    flash = [first.seconds(FLASH) for _ in range(50)]
    assert flash == [again.seconds(FLASH) for _ in range(50)]
    assert len(set(flash)) == 50  # drawn, not fixed
    assert first.seconds(PRO) == pytest.approx(9.1)  # fixed part + the model's own median
    other = LatencyModel(EmulatorConfig(latency_median_ms=500, latency_sigma=1.0, seed=7))
    assert [other.seconds(FLASH) for _ in range(5)] != flash[:5]


def test_the_fixed_latency_alone_is_unchanged() -> None:
    model = LatencyModel(EmulatorConfig(latency_ms=250))
    assert {model.seconds(FLASH) for _ in range(10)} == {0.25}


def test_negative_latency_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="latency medians and sigmas"):
        EmulatorConfig(latency_median_ms=100, latency_sigma=-1)


async def test_an_outage_answers_every_call_503_for_its_window(make_client: MakeClient) -> None:
    client, emulator = await make_client(outage_after_s=10, outage_seconds=120)
    now = [500.0]
    emulator.clock = lambda: now[0]
    assert (await call(client, ask("a")))[0] == 200  # the first call starts the clock
    now[0] = 509.9
    assert (await call(client, ask("b")))[0] == 200
    statuses = []
    for at in (510.0, 560.0, 629.9):
        now[0] = at
        status, answer = await call(client, ask(f"row at {at}"))
        statuses.append((status, answer["error"]["status"]))
    assert statuses == [(503, "UNAVAILABLE")] * 3
    now[0] = 630.0
    assert (await call(client, ask("c")))[0] == 200
    assert emulator.counts["fault:outage"] == 3 and emulator.counts["status:200"] == 3


def test_emulator_command_takes_the_new_options(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    def fake_serve(config: EmulatorConfig, host: str, port: int) -> None:
        seen["config"] = config

    monkeypatch.setattr("batchgen.emulator.serve", fake_serve)
    args = ["emulator", "--latency-median-ms", "2000", "--latency-sigma", "0.5"]
    args += ["--rpd", "100", "--outage", "30+120"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    config = seen["config"]
    assert (config.latency_median_ms, config.latency_sigma) == (2000, 0.5)
    assert (config.rpd_limit, config.outage_after_s, config.outage_seconds) == (100, 30, 120)
    bad = CliRunner().invoke(main, ["emulator", "--outage", "soon"])
    assert bad.exit_code == 2 and "--outage soon: expected AFTER+SECONDS" in bad.output
