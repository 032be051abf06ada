"""What a job will cost and how long it will take, before it runs.

Prompt tokens are counted on the rendered requests of all rows or of a sample spread evenly over
the input, and scaled to the input's row count. Two ways to count:

- **countTokens** (the default): each sampled request is sent to the model's countTokens
  endpoint as ``{"generateContentRequest": {...}}``, the whole request, so that the
  systemInstruction (and whatever else of the request the API bills as prompt) is counted: the
  ``{"contents": [...]}`` form counts the contents alone (docs/gemini-api.md §8). countTokens is
  free.
- **offline** (``offline=True``): about four characters a token, the emulator's rule. Rough:
  real tokenizers differ by language and content, and the schema the API may add is not seen.
  A row's media (``media=``, see :mod:`batchgen.reports.media_cost`) are counted by the published
  rules from the files' headers (:mod:`batchgen.input.media_tokens`).

When the counts are split by modality (countTokens' ``promptTokensDetails``, or the offline
media rules), audio is priced at the model's audio input rate, and ``prompt_by_modality`` says
what the prompt is made of.

Output tokens (answer + thinking, both billed as output) come from an earlier output of the same
job when there is one (its usage ledger: the mean per answer, and per row with its retries);
else from the schema and ``maxOutputTokens`` as a range: a minimal answer without thinking, up
to the ``maxOutputTokens`` ceiling for every row. A short pilot (``batchgen run JOB --limit 20``)
turns that range into a measurement.

The run time is a lower bound from the limits, modelled on what the run does: calls /
``requests_per_minute``, prompt tokens / ``tokens_per_minute`` when the job sets it, the Pacific
days ``requests_per_day`` spreads the calls over, and, with an earlier output, calls × its mean
latency / the calls in flight (Little's law). Under ``concurrency = "auto"`` the calls in flight
are what the run's own concurrency controller would settle on at that rate and latency (rate ×
latency × headroom, within ``max_concurrency``), so a rate-bound run is estimated at its rate;
a whole number is used as given. The estimate covers the whole input, rows already done
included, and assumes no implicit cache hits (which would make the real cost lower).

The cost is priced at the rates in force on the day of the estimate (a model retired and routed
elsewhere at the routed model's rates), for each service tier side by side: standard, Flex and
Batch (both a fraction of standard, see :mod:`batchgen.pricing.table`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import date
from functools import partial
from pathlib import Path
from typing import Any

from aiolimiter import AsyncLimiter

from batchgen.backends.batch.cache import MARGIN_S as BATCH_MARGIN_S
from batchgen.backends.batch.cache import expected_seconds as batch_expected_seconds
from batchgen.backends.online.concurrency import ConcurrencyController
from batchgen.backends.online.retry import RetryPolicy
from batchgen.errors import (
    OFFLINE,
    CheckpointError,
    FatalApiError,
    InputError,
    JobError,
    Option,
    TemplateError,
)
from batchgen.gemini.batch_client import NOT_RELAYED, BatchClient, not_relayed
from batchgen.gemini.client import ApiError, GeminiClient
from batchgen.gemini.connect import client_for
from batchgen.input.media import BadMediaError
from batchgen.input.media_tokens import MediaError, row_count
from batchgen.job.spec import Job
from batchgen.plan import MEDIA_TOKENS, Plan, plan_job
from batchgen.pricing.caching import CacheCosts, cache_costs
from batchgen.pricing.file import load_prices
from batchgen.pricing.table import TIERS, ModelPrice, PriceTable, utc_today
from batchgen.records import NOT_CALLS, InputRow, TokenCount
from batchgen.redact import redact_url
from batchgen.reports.media_cost import (
    MediaOf,
    MediaRefs,
    modality_sums,
    offline_count,
    priced,
    with_parts,
)
from batchgen.reports.repeats import Repeats, count_repeats
from batchgen.reports.report import load_calls
from batchgen.run.caching import TTL_MARGIN_S
from batchgen.store.jobfile import fingerprint_parts, read_job_record
from batchgen.store.layout import JOB_FILE, RESULTS_DIR
from batchgen.store.outdir import OutputDir
from batchgen.store.remote import local_view

__all__ = [
    "DEFAULT_SAMPLE",
    "Estimate",
    "OutputGuess",
    "TimeBounds",
    "estimate_job",
    "time_bounds",
]

DEFAULT_SAMPLE = 200
DEFAULT_OUTPUT_LIMIT = 65_536  # outputTokenLimit of the 2.5 and 3 models, when a job sets none
COUNT_CONCURRENCY = 8  # countTokens calls in flight


@dataclass(frozen=True)
class OutputGuess:
    """Output + thinking tokens expected per row, and where the guess comes from."""

    low: float
    high: float
    source: str
    calls_per_row: float = 1.0  # with retries, from an earlier output
    latency_ms: float | None = None  # mean round trip of an earlier output's answers


@dataclass(frozen=True)
class Estimate:
    """A job's expected tokens, cost and run time; token totals are for all input rows."""

    job: str
    model: str
    rows: int
    sampled: int
    unrenderable: int  # sampled rows whose prompt does not render: not sent, not paid
    method: str  # "countTokens" or "offline"
    prompt_tokens: int  # one call per row
    output_low: int
    output_high: int
    output_source: str
    calls_per_row: float
    cost_low: float | None  # standard tier; None: the model has no price
    cost_high: float | None
    priced_as: str | None
    prices: str
    minutes_requests: float
    minutes_tokens: float | None
    minutes_latency: float | None
    requests_per_minute: int
    tokens_per_minute: int | None
    notes: tuple[str, ...] = ()
    minutes_daily: float | None = None  # the whole days requests_per_day spreads the calls over
    requests_per_day: int | None = None
    in_flight: int | None = None  # calls in flight at the earlier run's latency
    concurrency: int | None = None  # the job's fixed concurrency; None: "auto"
    priced_on: str = ""  # the UTC day whose rates were used (ISO)
    tier_costs: dict[str, tuple[float, float]] = field(default_factory=dict)  # tier → low, high
    tier: str = "standard"  # the tier the job asks for (model.tier, --tier)
    # rows whose request repeats an earlier row's; with output.dedupe, tokens, cost and time
    # count one call per distinct request
    repeats: Repeats | None = None
    prompt_by_modality: dict[str, int] = field(default_factory=dict)  # empty: not split
    # the shared prefix with and without an explicit cache (None: no shared prefix, or no
    # price); cache_use says what the run will do: "cache", "no cache" or "off"
    cache: CacheCosts | None = None
    cache_use: str = "off"
    cache_why: str | None = None  # why not, when the run goes uncached

    @property
    def minutes(self) -> float:
        """The longest of the lower bounds: the run takes at least this long."""
        bounds = (
            self.minutes_requests,
            self.minutes_tokens,
            self.minutes_latency,
            self.minutes_daily,
        )
        return max(b for b in bounds if b is not None)


def estimate_job(
    job: Job,
    *,
    api_key: str = "",
    sample: int | None = DEFAULT_SAMPLE,
    offline: bool = False,
    prices: PriceTable | None = None,
    history: Path | None = None,
    at: date | None = None,
    media: MediaOf | None = None,
) -> Estimate:
    """Estimate ``job``'s tokens, cost and run time.

    Args:
        job: the loaded job.
        api_key: the key for countTokens (unused with ``offline``).
        sample: rows to count, spread evenly over the input; None counts every row.
        offline: count about four characters a token instead of calling countTokens.
        prices: the price table (default: the packaged one).
        history: an earlier output of the same job to take output sizes from (default: the
            job's output directory, when it holds one).
        at: the UTC day whose prices apply (default: today).
        media: a row's media parts as (MIME type, path or bytes) pairs: counted with the row,
            by countTokens or offline by the published rules.

    Raises:
        BatchgenError: a bad job or input; FatalApiError when countTokens refuses the key or
            the model, or (tier batch) when ``base_url`` does not relay the Files API, found by
            starting an upload it never sends; JobError when it fails otherwise.
    """
    if sample is not None and sample < 1:
        raise JobError(Option(f"sample={sample}", f"--sample {sample}"), ": count at least one row")
    plan = plan_job(job)
    total = plan.reader.scan().rows
    if total == 0:
        raise InputError(f"{job.input.path}: no rows (the file has only a header)")
    positions = sample_positions(total, sample)
    bodies, texts, refs, ids, rows, unrenderable = _render(plan, positions, media)
    if offline:
        sampled = zip(texts, refs, ids, strict=True)
        counts = [offline_count(rough_tokens(t), r, i) for t, r, i in sampled]
    else:
        if job.model.tier == "batch":  # before a run relies on it: can Batch Mode upload here?
            asyncio.run(_probe_files(job, api_key))
        whole = _whole_bodies(plan, rows, bodies, refs, media is not None)
        counts = asyncio.run(_count_all(job, api_key, whole))
    scale = total / len(positions)
    repeats = count_repeats(plan)
    paid = repeats.distinct / repeats.rows if job.output.dedupe and repeats.rows else 1.0
    scale *= paid  # with dedupe, one call per distinct request
    prompt_tokens = sum(c.total for c in counts) * scale
    notes: list[str] = []
    guess = _history_guess(job, history, notes) or _schema_guess(job)
    table = prices or load_prices()
    day = at or utc_today()
    price = table.resolve(job.model.name, at=day)
    if unrenderable:
        notes.append(
            f"{unrenderable} of {len(positions)} sampled rows do not render (an empty column "
            "the prompt needs): they would fail as 'template' rows, unpaid"
        )
    costs = _tier_costs(price, counts, guess, scale)
    notes += _price_notes(table, price, job.model.name, day)
    if offline and any(refs) and ("mediaResolution" in job.generation or _gemini_3(job)):
        notes.append(
            "offline image counts follow the published 258-per-tile rule; generation."
            "mediaResolution (Gemini 3 models) changes them: estimate with countTokens to measure"
        )
    answered = total * paid - unrenderable * scale
    bounds = time_bounds(job, guess, rows=round(total * paid), prompt_tokens=prompt_tokens)
    hours = _cache_hours(job, history, bounds)
    cache, use, why = _cache_choice(plan, api_key, offline, price, round(total * paid), hours)
    if cache is not None and use == "cache" and costs:  # the run's own tier pays the cache
        saved = cache.without - cache.with_cache
        low, high = costs[job.model.tier]
        costs = {**costs, job.model.tier: (max(low - saved, 0.0), max(high - saved, 0.0))}
    return Estimate(
        job=job.name,
        model=job.model.name,
        rows=total,
        sampled=len(positions),
        unrenderable=unrenderable,
        method="offline" if offline else "countTokens",
        prompt_tokens=round(prompt_tokens),
        output_low=round(guess.low * answered),
        output_high=round(guess.high * answered),
        output_source=guess.source,
        calls_per_row=guess.calls_per_row,
        cost_low=costs["standard"][0] if costs else None,
        cost_high=costs["standard"][1] if costs else None,
        priced_as=price.name if price else None,
        prices=table.describe(),
        **asdict(bounds),
        notes=tuple(notes),
        priced_on=day.isoformat(),
        tier_costs=costs,
        tier=job.model.tier,
        repeats=repeats,
        prompt_by_modality=modality_sums(counts, scale),
        cache=cache,
        cache_use=use,
        cache_why=why,
    )


def _cache_choice(
    plan: Plan,
    api_key: str,
    offline: bool,
    price: ModelPrice | None,
    calls: int,
    hours: float,
) -> tuple[CacheCosts | None, str, str | None]:
    """The shared prefix's cost with and without a cache for ``hours`` of storage, and what
    the run will do (the same rule as :class:`batchgen.run.caching.RunCache`; in Batch Mode,
    at batch rates, the run probing the cache with a one-row batch first)."""
    job = plan.job
    prefix = plan.prefix()
    if prefix is None:
        return None, "off", "no prefix every row shares (system instruction, examples, context)"
    if job.cache.mode == "off":
        return None, "off", '[cache] mode = "off"'
    if price is None:
        return None, "no cache", f"no price for {job.model.name} to decide by"
    body = dataclasses.replace(prefix, context_id="").count_body()  # the text: counted
    context = _context_tokens(plan)  # the context files: by the published rules
    if offline or len(body) + context < price.min_cache_tokens:  # too short: no call
        tokens = rough_tokens(body.decode()) + context
    else:
        tokens = asyncio.run(_count_all_raw(job, api_key, body)) + context
    costs = cache_costs(price, job.model.tier, calls=calls, prefix_tokens=tokens, hours=hours)
    return costs, "cache" if costs.pays else "no cache", costs.why_not


def _cache_hours(job: Job, history: Path | None, bounds: TimeBounds) -> float:
    """The hours a cache would be stored: the run's expected time (a batch's, in Batch Mode,
    from the earlier batches of the output when it has some), plus the run's margin."""
    if job.model.tier == "batch":
        out = history or job.output.directory
        return (batch_expected_seconds(Path(out)) + BATCH_MARGIN_S) / 3600
    minutes = max(
        b
        for b in (bounds.minutes_requests, bounds.minutes_tokens, bounds.minutes_latency)
        if b is not None
    )
    return (minutes * 60 + TTL_MARGIN_S) / 3600


def _context_tokens(plan: Plan) -> int:
    """The job's context files' prompt tokens by the published rules (a file without an
    offline rule, or not here, as one page or tile)."""
    pairs = plan.context_pairs()
    try:
        counted = row_count(0, pairs).total
    except MediaError:
        counted = MEDIA_TOKENS * len(pairs)
    return counted + MEDIA_TOKENS * (len(plan.context) - len(pairs))


async def _count_all_raw(job: Job, api_key: str, body: bytes) -> int:
    async with client_for(job, api_key, GeminiClient) as client:
        return await client.count_tokens(body)


def _gemini_3(job: Job) -> bool:
    name = job.model.name.removeprefix("models/")
    return name.startswith("gemini-") and name[7:8].isdigit() and int(name[7:8]) >= 3


def _tier_costs(
    price: ModelPrice | None, counts: Sequence[TokenCount], guess: OutputGuess, scale: float
) -> dict[str, tuple[float, float]]:
    """(low, high) cost per service tier; empty when the model has no price."""
    if price is None:
        return {}
    return {
        tier: (
            _cost(price, counts, guess.low, 1.0, scale, tier),
            _cost(price, counts, guess.high, guess.calls_per_row, scale, tier),
        )
        for tier in TIERS
    }


def _price_notes(table: PriceTable, price: ModelPrice | None, model: str, day: date) -> list[str]:
    """No price at all, or a price that changes after ``day``: a later run costs otherwise."""
    if price is None:
        return [
            f"no price for model {model!r} on {day.isoformat()}: cost unknown; give a price file "
            "(prices=, --prices FILE)"
        ]
    later = [p for p in table.models[price.name].periods if p.start and p.start > day]
    if not later:
        return []
    nxt = later[0]
    return [
        f"{price.name}'s price changes on {nxt.start}: {nxt.input:g} in / {nxt.output:g} out "
        f"per 1M from then (now {price.input:g} / {price.output:g}); calls made after that day "
        "cost accordingly"
    ]


@dataclass(frozen=True)
class TimeBounds:
    """The run time (minutes) each limit allows at best, and the limits behind them."""

    minutes_requests: float
    minutes_tokens: float | None
    minutes_latency: float | None
    minutes_daily: float | None
    requests_per_minute: int
    tokens_per_minute: int | None
    requests_per_day: int | None
    in_flight: int | None
    concurrency: int | None


def time_bounds(job: Job, guess: OutputGuess, *, rows: int, prompt_tokens: float) -> TimeBounds:
    """The run time each limit allows at best, as the run paces itself.

    Throughput is the least of the rate limits and (Little's law) the calls in flight over
    the earlier run's latency, when there is one; as times, the longest bound wins.
    """
    limits = job.limits
    calls = rows * guess.calls_per_row
    rpm, tpm, rpd = limits.requests_per_minute, limits.tokens_per_minute, limits.requests_per_day
    per_minute = float(rpm)
    if tpm and prompt_tokens > 0:  # the request rate the token rate allows
        per_minute = min(per_minute, tpm * rows / prompt_tokens)
    latency = guess.latency_ms
    flight = None if latency is None else in_flight(job, per_minute / 60, latency / 1000)
    return TimeBounds(
        minutes_requests=calls / rpm,
        minutes_tokens=prompt_tokens * guess.calls_per_row / tpm if tpm else None,
        minutes_latency=(
            calls * latency / flight / 60_000 if latency is not None and flight else None
        ),
        minutes_daily=_daily_minutes(calls, rpd),
        requests_per_minute=rpm,
        tokens_per_minute=tpm,
        requests_per_day=rpd,
        in_flight=flight,
        concurrency=job.limits.pinned,
    )


def _daily_minutes(calls: float, per_day: int | None) -> float | None:
    """The whole days between the first and the last of the Pacific days the calls need.

    The run stops at a day's cap (exit 5) and a rerun goes on the next day; None when one
    day's quota holds every call.
    """
    if not per_day or calls <= per_day:
        return None
    return (math.ceil(calls / per_day) - 1) * 24 * 60.0


def in_flight(job: Job, per_second: float, latency_s: float) -> int:
    """The calls the run keeps in flight at this allowed rate and latency.

    Asked of the run's own controller, so that its rule (rate × latency × headroom) and its
    ceiling (``max_concurrency``) hold here too; a fixed concurrency is what it pins.
    """
    controller = ConcurrencyController(
        lambda: per_second,
        cap=job.limits.max_concurrency,
        pinned=job.limits.pinned,
        clock=lambda: 0.0,
    )
    controller.observe(latency_s)
    return controller.target


def sample_positions(total: int, sample: int | None) -> list[int]:
    """Row positions spread evenly over ``total`` rows (all of them when ``sample`` covers it)."""
    if sample is None or sample >= total:
        return list(range(total))
    return sorted({i * total // sample for i in range(sample)})


def rough_tokens(text: str) -> int:
    """About four characters a token (the emulator's tokenizer); rough for any real model."""
    return max(1, round(len(text) / 4)) if text else 0


def _render(
    plan: Plan, positions: Sequence[int], media: MediaOf | None = None
) -> tuple[list[bytes], list[str], list[MediaRefs], list[str], list[InputRow], int]:
    """The text request bodies, prompt texts, media and ids of the rows at ``positions``, and
    the rows; how many failed to render (or have bad media)."""
    wanted = set(positions)
    last = max(positions)
    bodies: list[bytes] = []
    texts: list[str] = []
    refs: list[MediaRefs] = []
    ids: list[str] = []
    rows: list[InputRow] = []
    failed = 0
    for batch in plan.reader.batches():
        for row in batch:
            if row.position not in wanted:
                continue
            try:
                body, _ = plan.request(row)
            except TemplateError:
                failed += 1
                continue
            try:
                pairs = media(row) if media is not None else plan.media_pairs(row)
            except BadMediaError:
                failed += 1  # named by validate's pre-scan; the run fails the row as input
                continue
            bodies.append(body)
            texts.append(_prompt_text(body))
            refs.append(pairs)
            ids.append(row.row_id)
            rows.append(row)
        if batch and batch[-1].position >= last:
            break
    return bodies, texts, refs, ids, rows, failed


def _prompt_text(body: bytes) -> str:
    """The text a body asks about: the system instruction, then every turn (few-shot examples
    too), one per line, as the emulator reads it."""
    request = json.loads(body)
    turns = [request["systemInstruction"]] if "systemInstruction" in request else []
    turns += request["contents"]
    return "\n".join(part["text"] for turn in turns for part in turn["parts"])


# --- counting with the API -----------------------------------------------------------------


def count_request(model: str, body: bytes) -> bytes:
    """The countTokens body that counts a whole generateContent body, systemInstruction too."""
    name = json.dumps(f"models/{model}").encode()
    return b'{"generateContentRequest":{"model":' + name + b"," + body[1:] + b"}"


def _whole_bodies(
    plan: Plan,
    rows: Sequence[InputRow],
    bodies: Sequence[bytes],
    refs: Sequence[MediaRefs],
    given: bool,
) -> list[Callable[[], bytes]]:
    """For each sampled row, how to build its whole request (media inline) when its count is
    asked: built then, a few rows' files in memory at once, never the sample's."""
    if given:  # media= given by the caller: its pairs go before the row's text
        return [partial(with_parts, b, r) for b, r in zip(bodies, refs, strict=True)]
    if not plan.job.prompt.media and not plan.context:
        return [partial(bytes, b) for b in bodies]
    return [partial(_sample_body, plan, row) for row in rows]


def _sample_body(plan: Plan, row: InputRow) -> bytes:
    body = plan.sample_body(row)
    if body is None:  # the file changed since the scan: count its text
        return plan.request(row)[0]
    return body


async def _count_all(
    job: Job, api_key: str, bodies: Sequence[Callable[[], bytes]]
) -> list[TokenCount]:
    limits = job.limits
    limiter = AsyncLimiter(limits.requests_per_minute, 60)
    gate = asyncio.Semaphore(min(job.limits.pinned or COUNT_CONCURRENCY, COUNT_CONCURRENCY))
    async with client_for(job, api_key, GeminiClient, connections=COUNT_CONCURRENCY) as client:

        async def one(build: Callable[[], bytes]) -> TokenCount:
            async with gate:  # a row's media are read here: a few rows' files in memory at once
                body = count_request(job.model.name, build())
                return await _count_one(client, job, limiter, body)

        return list(await asyncio.gather(*(one(b) for b in bodies)))


async def _probe_files(job: Job, api_key: str) -> None:
    """Start (and abandon) an upload: a proxy that does not relay the Files API says so now."""
    where = redact_url(job.model.base_url)
    async with client_for(job, api_key, BatchClient) as client:
        try:
            await client.probe_upload()
        except ApiError as exc:
            if exc.category == NOT_RELAYED:
                raise FatalApiError(not_relayed(where, exc.message)) from None
            raise JobError(
                f"{where}: the Files API upload start that Batch Mode needs failed: "
                f"{exc.message}; rerun, or estimate without the API (--offline)"
            ) from None


async def _count_one(
    client: GeminiClient, job: Job, limiter: AsyncLimiter, body: bytes
) -> TokenCount:
    """One countTokens call, retried as a row's call is (429, 5xx, timeouts)."""
    try:
        async for attempt in RetryPolicy(job.retry).for_row():
            with attempt:
                await limiter.acquire()
                return await client.count_prompt(body)
    except ApiError as exc:
        raise JobError(
            f"{redact_url(job.model.base_url)} (model {job.model.name}): countTokens failed: "
            f"{exc.message}; rerun, or estimate without the API (", OFFLINE, ")",
        ) from None  # fmt: skip
    raise AssertionError("the retry loop ended without a count")  # pragma: no cover


# --- output tokens -------------------------------------------------------------------------


def _history_guess(job: Job, history: Path | None, notes: list[str]) -> OutputGuess | None:
    """Output sizes from an earlier output of the same job, if there is a usable one."""
    out = history or job.output.directory
    try:
        out = local_view(out)  # an object store's output: its mirror, pulled
    except CheckpointError:
        if history is not None:
            raise
        return None
    if not (out / JOB_FILE).is_file():
        if history is not None:
            raise CheckpointError(f"{out}: not a batchgen output (no {JOB_FILE})")
        return None
    parts = read_job_record(out)["parts"]
    mine = fingerprint_parts(job)
    changed = [k for k in mine if k != "model" and parts.get(k) != mine[k]]
    if changed or parts.get("model") != job.model.name:
        what = ", ".join(changed or ["model"])
        notes.append(f"{out}: written by a different job ({what} changed); its sizes are not used")
        return None
    calls, _ = load_calls(out)
    calls = calls[~calls["outcome"].isin(NOT_CALLS)]  # a twin's answer, a cache: no call
    ok = calls[calls["outcome"] == "ok"]
    if ok.empty:
        return None
    spent = calls["output_tokens"].fillna(0) + calls["thinking_tokens"].fillna(0)
    rows = calls["row_id"].nunique()
    low = float(spent[calls["outcome"] == "ok"].mean())
    return OutputGuess(
        low=low,
        high=max(low, float(spent.sum()) / rows),
        source=f"measured in {out} ({len(ok)} answers, {len(calls)} billed calls, {rows} rows)",
        calls_per_row=max(1.0, len(calls) / rows),
        latency_ms=_mean_latency(out),
    )


def _mean_latency(out: Path) -> float | None:
    table = OutputDir(out).read(RESULTS_DIR, ["row_id", "latency_ms"])
    if table is None:
        return None
    latency = table.to_pandas().drop_duplicates("row_id")["latency_ms"]
    mean = latency.mean()
    return None if math.isnan(mean) else float(mean)


def _schema_guess(job: Job) -> OutputGuess:
    """A minimal answer without thinking, up to the maxOutputTokens ceiling."""
    low = rough_tokens(json.dumps(small_answer(job.response_schema), separators=(",", ":")))
    limit = job.generation.get("maxOutputTokens")
    if isinstance(limit, int) and limit > 0:
        ceiling, said = limit, f"maxOutputTokens {limit:,}"
    else:
        ceiling, said = (
            DEFAULT_OUTPUT_LIMIT,
            f"no maxOutputTokens: assumed {DEFAULT_OUTPUT_LIMIT:,}",
        )
    source = (
        f"from the schema: a minimal answer ({low} tokens, no thinking) up to {said} per row "
        "(thinking included); a pilot run (limit=20, --limit 20) makes this a measurement"
    )
    n = job.candidates  # each candidate is its own answer, all billed as output
    if n > 1:
        source += f"; × {n} candidates"
    return OutputGuess(low=float(low * n), high=float(max(ceiling, low) * n), source=source)


def small_answer(schema: Mapping[str, Any], root: Mapping[str, Any] | None = None) -> Any:
    """A small value the schema accepts: required fields, one-item arrays, one-word strings.

    Either dialect: Gemini's Schema (upper-case types, ``nullable``) or a JSON Schema (lower-case
    types or a list of them, ``const``, ``oneOf``/``allOf``, ``prefixItems``, local ``$ref``s
    into ``$defs``); a nullable value is given a value, not null. ``root`` is the whole schema,
    for its ``$ref``s.
    """
    return _small(schema, schema if root is None else root, 0)


_MAX_DEPTH = 32  # a recursive $ref is followed this deep, then left empty
_SMALL_FORMATS = {"date": "2026-01-01", "date-time": "2026-01-01T00:00:00Z", "time": "00:00:00Z"}


def _small(schema: object, root: Mapping[str, Any], depth: int) -> Any:
    if not isinstance(schema, Mapping) or depth > _MAX_DEPTH:
        return None
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#"):
        return _small(_pointer(root, ref), root, depth + 1)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return min(schema["enum"], key=lambda v: len(json.dumps(v)))
    for key in ("anyOf", "oneOf"):
        if schema.get(key):
            values = [_small(s, root, depth + 1) for s in schema[key]]
            given = [v for v in values if v is not None] or values
            return min(given, key=lambda v: len(json.dumps(v)))
    if schema.get("allOf"):
        return _small(schema["allOf"][0], root, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    kind = kind.upper() if isinstance(kind, str) else ("OBJECT" if "properties" in schema else None)
    if kind == "OBJECT":
        props: Mapping[str, Any] = schema.get("properties") or {}
        required = set(schema.get("required") or ())
        order = [*(schema.get("propertyOrdering") or ()), *props]
        return {p: _small(props[p], root, depth + 1) for p in dict.fromkeys(order) if p in required}
    if kind == "ARRAY":
        if isinstance(schema.get("prefixItems"), list):
            return [_small(s, root, depth + 1) for s in schema["prefixItems"]]
        count = max(int(schema.get("minItems", 0)), min(1, int(schema.get("maxItems", 1))))
        items = schema.get("items")
        return [_small(items if isinstance(items, Mapping) else {}, root, depth + 1)] * count
    if kind == "STRING":
        return _small_string(schema)
    if kind == "INTEGER":
        return int(_within(schema, 1, math.ceil, math.floor))
    if kind == "NUMBER":
        return float(_within(schema, 0.5, float, float))
    if kind == "BOOLEAN":
        return True
    return None


def _small_string(schema: Mapping[str, Any]) -> str:
    if schema.get("format") in _SMALL_FORMATS:
        return _SMALL_FORMATS[schema["format"]]
    if isinstance(schema.get("pattern"), str):
        import random

        import rstr

        try:  # the pattern's own shortest-ish match, the same every time
            return str(rstr.Rstr(random.Random(0)).xeger(schema["pattern"]))
        except Exception:  # a pattern rstr cannot read: the length rule below
            pass
    return "x" * max(int(schema.get("minLength", 0)), min(6, int(schema.get("maxLength", 6))))


def _pointer(root: Mapping[str, Any], ref: str) -> object:
    """What a local JSON pointer (``#/$defs/Item``) names in ``root``, or None."""
    target: object = root
    for part in ref.removeprefix("#").strip("/").split("/") if ref != "#" else ():
        key = part.replace("~1", "/").replace("~0", "~")
        target = target.get(key) if isinstance(target, Mapping) else None
    return target


def _within(
    schema: Mapping[str, Any], value: float, up: Callable[[Any], Any], down: Callable[[Any], Any]
) -> float:
    """``value`` moved inside the schema's minimum and maximum (JSON Schema's exclusive bounds
    too: a whole number just inside, a fraction halfway between)."""
    if schema.get("maximum") is not None:
        value = min(value, down(schema["maximum"]))
    if schema.get("minimum") is not None:
        value = max(value, up(schema["minimum"]))
    low, high = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
    low = low if isinstance(low, int | float) and not isinstance(low, bool) else None
    high = high if isinstance(high, int | float) and not isinstance(high, bool) else None
    whole = up is math.ceil
    if low is not None and value <= low:
        value = math.floor(low) + 1 if whole else (low + high) / 2 if high is not None else low + 1
    if high is not None and value >= high:
        value = math.ceil(high) - 1 if whole else (low + high) / 2 if low is not None else high - 1
    return value


def _cost(
    price: ModelPrice,
    counts: Sequence[TokenCount],
    output: float,
    calls: float,
    scale: float,
    tier: str = "standard",
) -> float:
    """The cost of every row: each sampled prompt at its own context tier, scaled to the input."""
    per_call = round(output / calls)
    sampled = sum(priced(price, n, per_call, tier) * calls for n in counts)
    return sampled * scale
