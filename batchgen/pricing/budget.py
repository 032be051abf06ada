"""Money while a run works: the spend so far, and the ``--max-cost`` guard (per run).

Every call that returned usage is billed (retries and unusable answers too). With a cap, each
call first reserves its expected cost — its estimated prompt tokens (or, when more, the mean
prompt cost of the calls so far: media and audio make a prompt dearer than its text), and the
mean output and thinking tokens of the calls so far (``maxOutputTokens`` before the first
answer) — and a call
whose reservation does not fit waits for the calls in flight to settle. With nothing in flight, one
call may go while the spend is under the cap; once the spend reaches the cap, the run stops. So
the spend ends within about one call's cost of the cap.

Batch Mode rows cannot wait for a settle: a row is priced the same way before its chunk is
submitted (:meth:`Budget.hold`), and the run submits no row whose expected cost no longer fits;
what it submitted is collected, then the run stops (exit 6). Before any answer the expected
output is ``maxOutputTokens``, so a first batch run stays well inside the cap.

Calls are priced at the rate of the UTC day they are made (the price table is dated) and of
their service tier, each prompt modality at its rate (audio input is dearer on several models;
``usageMetadata.promptTokensDetails``): a call reserves at the tier it asks for (Flex: half
price) and settles at the tier that served it (a Flex call served at standard costs the standard
rate); a call to a retired model that is routed elsewhere costs the routed model's rate.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import date
from typing import Protocol

from batchgen.errors import MAX_COST, PRICES, BudgetReachedError, JobError, Option
from batchgen.pricing.table import TIERS, utc_today
from batchgen.records import Usage

FIRST_OUTPUT_GUESS = 1024  # output + thinking tokens expected before any answer, without a max


class Pricer(Protocol):
    """What :class:`batchgen.pricing.table.PriceTable` offers the runner."""

    def cost(
        self,
        model: str,
        *,
        prompt: int,
        output: int,
        thinking: int,
        cached: int,
        tier: str = ...,
        at: date | None = ...,
        audio: int = ...,
        cached_audio: int = ...,
    ) -> float | None: ...


class Budget:
    """Tracks the spend of one run and enforces its cap."""

    def __init__(
        self,
        pricer: Pricer | None,
        model: str,
        cap: float | None = None,
        max_output_tokens: int | None = None,
        today: Callable[[], date] = utc_today,
    ) -> None:
        self._pricer = pricer
        self._model = model
        self._today = today  # the day whose rate a call made now is billed at
        self.cap = cap
        self.priced = pricer is not None and self._price(Usage(prompt=1000)) is not None
        if cap is not None and not self.priced:
            raise JobError(
                MAX_COST, f": no price for model {model!r} on {today().isoformat()}, so the "
                "spend cannot be capped; add it with a price file (", PRICES, ")",
            )  # fmt: skip
        self.spent = 0.0
        self._reserved = 0.0
        self._holds = 0  # calls holding a reservation (counted: float sums do not return to 0)
        self._calls = 0
        self._output_sum = 0
        self._prompt_cost_sum = 0.0  # what the prompts of the calls so far cost, media included
        self._first_guess = max_output_tokens or FIRST_OUTPUT_GUESS
        self._settled = asyncio.Event()  # set whenever a reservation is given back

    @property
    def cost(self) -> float | None:
        """This run's spend, or None when the model has no price."""
        return self.spent if self.priced else None

    async def reserve(self, prompt_tokens: int, tier: str = "standard") -> float:
        """Hold a call's expected cost at the ``tier`` it asks for before sending it; wait or
        stop at the cap."""
        cap = self.cap
        if cap is None:
            return 0.0
        while self.spent + self._reserved + (need := self._expected(prompt_tokens, tier)) > cap:
            if not self._holds and self.spent < cap:
                break  # alone, one call may pass: its real cost is what will be learnt
            if not self._holds:
                raise self.reached()
            self._settled.clear()
            await self._settled.wait()
        self._reserved += need
        self._holds += 1
        return need

    def hold(self, prompt_tokens: int, tier: str) -> float | None:
        """Reserve a call's expected cost now, without waiting: the amount held (0 without a
        cap), or None when it does not fit under the cap (Batch Mode: priced before submitting).
        """
        if self.cap is None:
            return 0.0
        need = self._expected(prompt_tokens, tier)
        if self.spent + self._reserved + need > self.cap:
            return None
        self._reserved += need
        self._holds += 1
        return need

    def reached(self) -> BudgetReachedError:
        """The error that stops a run whose next call no longer fits under the cap."""
        cap = Option(f"max_cost ${self.cap:g}", f"--max-cost {self.cap:g}")
        return BudgetReachedError(
            cap, f" reached (this run spent ${self.spent:.4f}); results so far are saved: "
            "rerun to go on",
        )  # fmt: skip

    def charge(self, usage: Usage, tier: str = "standard") -> None:
        """Count a call that held nothing in this run (a batch an earlier run submitted)."""
        self.spent += self._price(usage, tier) or 0.0
        self._calls += 1
        self._output_sum += usage.output + usage.thinking
        prompt_only = Usage(usage.prompt, cached=usage.cached, prompt_details=usage.prompt_details,
                            cached_details=usage.cached_details)  # fmt: skip
        self._prompt_cost_sum += self._price(prompt_only, tier) or 0.0

    def add(self, usd: float) -> None:
        """Count a cost that is no call (a context cache's creation or storage)."""
        if self._pricer is not None:
            self.spent += usd

    def settle(self, held: float, usage: Usage | None, tier: str = "standard") -> None:
        """Replace a reservation by the call's real cost at the ``tier`` that served it (None:
        the call returned no usage, or never finished). Synchronous, so that it can run in a
        ``finally``."""
        if usage is not None:
            self.charge(usage, tier)
        if self.cap is not None:
            self._holds -= 1
            self._reserved = max(0.0, self._reserved - held) if self._holds else 0.0
            self._settled.set()

    def _expected(self, prompt_tokens: int, tier: str) -> float:
        """A call's expected cost: its prompt (at least the mean prompt cost so far, which
        holds what media cost), and the mean output of the calls so far."""
        expected_output = self._output_sum / self._calls if self._calls else self._first_guess
        usage = Usage(prompt=prompt_tokens, output=round(expected_output))
        need = self._price(usage, tier) or 0.0
        if self._calls:  # what the prompts so far cost beyond what their text alone would
            text = self._price(Usage(prompt=prompt_tokens), tier) or 0.0
            need += max(0.0, self._prompt_cost_sum / self._calls - text)
        return need

    def _price(self, usage: Usage, tier: str = "standard") -> float | None:
        if self._pricer is None:
            return None
        return self._pricer.cost(
            self._model,
            prompt=usage.prompt,
            output=usage.output,
            thinking=usage.thinking,
            cached=usage.cached,
            tier=tier if tier in TIERS else "standard",  # e.g. "priority": not cheaper
            at=self._today(),
            audio=usage.audio,
            cached_audio=usage.cached_audio,
        )
