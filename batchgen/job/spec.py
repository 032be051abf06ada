"""The job file: one TOML file describes one job. Everything is checked here, before any work.

Relative paths in a job file are relative to the job file's own folder, so a job runs the same
from any working directory (cron starts in $HOME).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import msgspec
from msgspec import Meta
from msgspec.structs import replace

from batchgen.errors import JobError
from batchgen.job.decode import convert, schema_hook
from batchgen.job.location import StoreError, read_bytes, store_url
from batchgen.job.response_schema import (
    GEMINI,
    ResponseSchema,
    gemini_schema,
    json_schema,
    load_pydantic_schema,
)
from batchgen.job.wire import checked_key, unsendable
from batchgen.redact import redact_url

DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com"
# where google-genai reads the key, in its order: the first that is set wins
SDK_KEY_ENVS = ("GOOGLE_API_KEY", "GEMINI_API_KEY")
Format = Literal["csv", "parquet", "jsonl", "auto"]  # "auto": by the input file's extension
INPUT_FORMATS: dict[str, Format] = {
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".jsonl.gz": "jsonl",
    ".ndjson.gz": "jsonl",
}
# The service tiers a job can ask for (README "Tiers"; docs/gemini-api.md §11). Flex answers in
# minutes, not seconds (its target is 1-15 min), so a Flex job waits longer for each call unless
# it sets limits.timeout_seconds itself.
Tier = Literal["standard", "flex", "batch"]
TIERS: tuple[Tier, ...] = get_args(Tier)
FLEX_TIMEOUT_SECONDS = 900.0

# generationConfig fields passed through as given (GenerationConfig in generative_service.proto).
# responseMimeType and responseSchema are batchgen's own; candidateCount gives one result row per
# candidate (a ``candidate`` column).
GENERATION_KEYS = frozenset(
    {
        "candidateCount",
        "stopSequences",
        "maxOutputTokens",
        "temperature",
        "topP",
        "topK",
        "seed",
        "presencePenalty",
        "frequencyPenalty",
        "responseLogprobs",
        "logprobs",
        "enableEnhancedCivicAnswers",
        "mediaResolution",
        "thinkingConfig",
    }
)

# The enums of safetySettings and thinkingConfig.thinkingLevel (docs/gemini-api.md §12): the
# names, as the API spells them; the job may write them in any case, as the API reads them.
HARM_CATEGORIES = (
    "HARM_CATEGORY_HARASSMENT",
    "HARM_CATEGORY_HATE_SPEECH",
    "HARM_CATEGORY_SEXUALLY_EXPLICIT",
    "HARM_CATEGORY_DANGEROUS_CONTENT",
    "HARM_CATEGORY_CIVIC_INTEGRITY",
)
HARM_THRESHOLDS = (
    "BLOCK_LOW_AND_ABOVE",
    "BLOCK_MEDIUM_AND_ABOVE",
    "BLOCK_ONLY_HIGH",
    "BLOCK_NONE",
    "OFF",
)
THINKING_LEVELS = ("MINIMAL", "LOW", "MEDIUM", "HIGH")
MAX_CANDIDATES = 8  # candidateCount's documented range is 1-8

Positive = Annotated[int, Meta(gt=0)]
Above0 = Annotated[float, Meta(gt=0)]  # seconds, minutes, megabytes


class _Table(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A table of a job file: its keys, types, ranges and defaults, each stated once here."""


class InputSpec(_Table, frozen=True):
    """[input]: the rows. ``path`` is relative to the job file's folder; ``format`` "auto"
    follows its extension; ``carry`` columns are copied to the output as they are; ``rename``
    gives columns new names (old → new) that the rest of the job uses."""

    path: Path
    format: Format = "auto"
    id_column: str | None = None
    carry: Annotated[tuple[str, ...], Meta(extra={"wanted": "a list of column names"})] = ()
    rename: dict[str, str] = msgspec.field(default_factory=dict)


class ModelSpec(_Table, frozen=True):
    """[model]: which model, where, with which key, at which service tier (how the calls are
    served and billed)."""

    name: str
    base_url: str = DEFAULT_BASE_URL
    api_version: str = "v1beta"
    # not named: the variable google-genai reads (GOOGLE_API_KEY, else GEMINI_API_KEY), chosen
    # when the job is loaded (sdk_key_env)
    api_key_env: str = "GEMINI_API_KEY"
    tier: Tier = "standard"

    @property
    def url(self) -> str:
        """The generateContent endpoint."""
        return f"{self.base_url}/{self.api_version}/models/{self.name}:generateContent"


class ExampleSpec(_Table, frozen=True):
    """[[prompt.examples]]: one worked example, sent as a user turn and a model turn before the
    row's own turn. ``user`` is a template like ``prompt.user``; ``model`` is the answer, as a
    template (sent as written: for a JSON answer, write JSON) or as a table or array (sent as its
    JSON, checked against the response schema)."""

    user: str
    model: Annotated[
        str | dict[str, Any] | list[Any],
        Meta(description="the model's answer: text (sent as written), or a table or an array "
             "(sent as its JSON)"),
    ]  # fmt: skip


class PromptSpec(_Table, frozen=True):
    """[prompt]: Jinja templates over the row's columns, the row's media columns and the
    context files every request carries; ``examples`` go before the row's turn.

    ``media`` names input columns whose values are media: a file path (relative to the input
    file's folder), bytes, an ``https://`` or ``gs://`` URI, or a Files API name
    (``files/...``); each becomes a part before the row's text. ``context`` names files
    (relative to the job file) sent first in every request. ``media_types`` fixes the MIME type
    of a media column (``scan = "application/pdf"``) instead of sniffing it.
    """

    user: str
    system: str | None = None
    examples: tuple[ExampleSpec, ...] = ()
    media: Annotated[
        tuple[str, ...], Meta(description="input columns holding media (paths, bytes, URIs)")
    ] = ()
    context: Annotated[
        tuple[str, ...], Meta(description="files sent before every row's parts")
    ] = ()
    media_types: Annotated[
        dict[str, str], Meta(description="a MIME type per media column, instead of sniffing")
    ] = msgspec.field(default_factory=dict)


class SafetySetting(_Table, frozen=True):
    """[[safety_settings]]: how strictly the API blocks one harm category (sent as the request's
    ``safetySettings``)."""

    category: Annotated[
        str,
        Meta(
            description="a harm category, any case, HARM_CATEGORY_ optional",
            extra_json_schema={"examples": list(HARM_CATEGORIES)},
        ),
    ]
    threshold: Annotated[
        str,
        Meta(description="a block threshold, any case",
             extra_json_schema={"examples": list(HARM_THRESHOLDS)}),
    ]  # fmt: skip


class MediaSpec(_Table, frozen=True):
    """[media]: what goes inline and what through the Files API.

    A media file up to ``inline_max_mb`` (MB of 10^6 bytes) goes inline as base64, unless the
    request would pass the API's size limit (then its largest parts are uploaded) or another row
    already sent the same content (then it is uploaded once and named by every later row).
    Bigger files are uploaded (once per content, kept 48 h, recorded in OUTPUT/uploads.jsonl).
    ``memory_mb`` bounds the inline media held in memory by the requests being built and sent
    (a 2 MB image takes ~2.7 MB as base64): the rows past it wait, so it also bounds how many
    inline-media calls are in flight; raise it when the API's latency, not memory, limits a run.
    A relative path in a media column is read from ``directory`` (relative to the job file;
    by default the input file's folder).
    """

    inline_max_mb: Above0 = 20.0
    memory_mb: Annotated[
        float,
        Meta(gt=0, description="inline media held in memory at once (requests being sent)"),
    ] = 32.0
    directory: Annotated[
        Path | None,
        Meta(description="where relative media paths are read from; default: the input's folder"),
    ] = None


class LimitsSpec(_Table, frozen=True):
    """[limits]: the quota and how many calls may be in flight.

    ``concurrency = "auto"`` (the default): the calls in flight follow the allowed rate times
    the observed latency, up to ``max_concurrency`` (enough for
    60 s answers at 2,000 requests a minute). An integer pins it. ``tokens_per_minute`` counts
    input (prompt) tokens, as the API counts its TPM; ``requests_per_day`` is counted per
    Pacific day, when the API resets it; a bigger answer than ``max_response_mb`` (after
    decompression) fails the call. A Flex job waits 900 s for an answer unless it sets
    ``timeout_seconds`` (FLEX_TIMEOUT_SECONDS).
    """

    requests_per_minute: Positive = 1000
    tokens_per_minute: Positive | None = None
    requests_per_day: Positive | None = None
    concurrency: Positive | Literal["auto"] = "auto"
    max_concurrency: Positive = 2048
    timeout_seconds: Above0 = 600.0
    max_response_mb: Above0 = 32.0

    @property
    def max_response_bytes(self) -> int:
        return int(self.max_response_mb * 1024 * 1024)

    @property
    def pinned(self) -> int | None:
        """The pinned concurrency; None under "auto"."""
        return None if self.concurrency == "auto" else self.concurrency

    @property
    def most_in_flight(self) -> int:
        """The most calls ever in flight: the pinned number, else ``max_concurrency``."""
        return self.max_concurrency if self.pinned is None else self.pinned


class RetrySpec(_Table, frozen=True):
    """[retry]: how hard to try one row.

    ``attempts`` bounds all calls for a row; transient HTTP failures (429, 5xx, timeouts, dropped
    connections) use them. Answer failures (blocked, SAFETY, invalid JSON, schema) are retried
    until ``answer_attempts`` of them. No wait runs past ``row_deadline_seconds`` (counted from
    the row's first call): a row whose next wait would end after it fails there. A delay the
    server asks for (RetryInfo, Retry-After) is waited at most ``max_server_delay_seconds``.
    A run whose calls have all failed server-side for ``outage_minutes`` stops (exit 4).
    A Flex row that has been refused for lack of capacity (429, 503) for
    ``flex_fallback_seconds`` since its first such refusal is retried at the standard tier.
    """

    attempts: Positive = 5
    answer_attempts: Positive = 2
    row_deadline_seconds: Above0 = 900.0
    backoff_initial_seconds: Above0 = 1.0
    backoff_max_seconds: Above0 = 60.0
    max_server_delay_seconds: Above0 = 300.0
    outage_minutes: Above0 = 10.0
    flex_fallback_seconds: Above0 | None = None


class BatchSpec(_Table, frozen=True):
    """[batch]: how a ``tier = "batch"`` run uses Batch Mode.

    ``rows_per_chunk`` rows go in one input file and one batch job; the job is polled after
    ``poll_initial_seconds``, then ever less often up to every ``poll_max_seconds``. With
    ``fallback = "online"`` the rows a batch answered with an error (or left out, or lost with
    an expired or failed batch) are asked again online, at the standard tier, in the same run;
    with ``"none"`` they are failure records that the next run submits again.
    """

    rows_per_chunk: Positive = 10_000
    poll_initial_seconds: Above0 = 10.0
    poll_max_seconds: Above0 = 120.0
    fallback: Literal["none", "online"] = "none"


class OutputSpec(_Table, frozen=True):
    """[output]: where the results go (``directory``: relative to the job file's folder; by
    default out/<job file name>), in which shape, how often they are flushed; the journal is
    fsynced at most every ``sync_seconds`` (group commit)."""

    directory: Annotated[Path, Meta(description="default: out/<job file name>")] = msgspec.field(
        default_factory=Path  # not given: _build puts out/<job file name> here
    )
    explode: bool = False
    dedupe: Annotated[
        bool, Meta(description="rows whose request repeats another's get its answer, unpaid")
    ] = False
    flush_rows: Positive = 1000
    flush_seconds: Above0 = 30.0
    sync_seconds: Above0 = 1.0


class CacheSpec(_Table, frozen=True):
    """[cache]: explicit context caching of the prefix every row shares (system instruction,
    shared few-shot turns). ``"auto"`` caches it when it is at least the model's minimum and
    caching is cheaper for the run (README, "Context caching"); ``"off"`` never does."""

    mode: Literal["auto", "off"] = "auto"


_SCHEMA_HELP = "the answer's schema; give exactly one of the five schema keys"


class JobFile(_Table, frozen=True):
    """A batchgen job file: one TOML file describes one job."""

    input: InputSpec
    model: ModelSpec
    prompt: PromptSpec
    name: Annotated[str, Meta(description="default: the job file's name")] | None = None
    response_schema: Annotated[Any, Meta(description=f"Gemini's Schema: {_SCHEMA_HELP}")] = None
    schema_file: Annotated[str, Meta(description="a JSON file of Gemini's Schema")] | None = None
    response_json_schema: Annotated[Any, Meta(description=f"JSON Schema: {_SCHEMA_HELP}")] = None
    json_schema_file: Annotated[str, Meta(description="a JSON Schema file")] | None = None
    schema: Annotated[str, Meta(description="'module:Model', a pydantic model")] | None = None
    generation: Annotated[
        dict[str, Any],
        Meta(
            description="generationConfig fields, as the API names them (candidateCount 1-8: "
            "one result row per candidate; thinkingConfig: thinkingLevel or thinkingBudget, "
            "includeThoughts)"
        ),
    ] = msgspec.field(default_factory=dict)
    limits: LimitsSpec = msgspec.field(default_factory=LimitsSpec)
    retry: RetrySpec = msgspec.field(default_factory=RetrySpec)
    output: OutputSpec = msgspec.field(default_factory=OutputSpec)
    batch: BatchSpec = msgspec.field(default_factory=BatchSpec)
    safety_settings: tuple[SafetySetting, ...] = ()
    media: MediaSpec = msgspec.field(default_factory=MediaSpec)
    cache: CacheSpec = msgspec.field(default_factory=CacheSpec)


@dataclass(frozen=True)
class Job:
    """A whole job, checked.

    ``response_schema`` is the schema the job sends: in canonical form for the Gemini dialect,
    as written for the JSON Schema dialect (``schema_dialect``); ``schema_source`` names the job
    key it came from.
    """

    name: str
    path: Path
    input: InputSpec
    model: ModelSpec
    prompt: PromptSpec
    response_schema: dict[str, Any]
    limits: LimitsSpec
    output: OutputSpec
    generation: dict[str, Any]
    retry: RetrySpec
    batch: BatchSpec
    media: MediaSpec = MediaSpec()
    schema_dialect: str = GEMINI
    schema_source: str = "response_schema"
    safety_settings: tuple[SafetySetting, ...] = ()
    cache: CacheSpec = CacheSpec()

    @property
    def candidates(self) -> int:
        """generation.candidateCount (1 when not set): result rows per call."""
        count = self.generation.get("candidateCount", 1)
        return count if isinstance(count, int) else 1

    @property
    def thoughts(self) -> bool:
        """Whether the job asks for thought summaries (thinkingConfig.includeThoughts)."""
        thinking = self.generation.get("thinkingConfig")
        return isinstance(thinking, dict) and thinking.get("includeThoughts") is True

    @cached_property
    def schema(self) -> ResponseSchema:
        """The response schema with its dialect: request key, Arrow field, validator."""
        return ResponseSchema(self.schema_dialect, self.response_schema, self.schema_source)


@dataclass(frozen=True)
class Overrides:
    """Command-line values that replace the job file's."""

    input: Path | None = None
    output: Path | None = None
    model: str | None = None
    base_url: str | None = None
    tier: str | None = None


def load_job(path: str | Path, overrides: Overrides | None = None) -> Job:
    """Read and check a job file; raise :class:`JobError` naming the file and key."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise JobError(f"{path}: no such job file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise JobError(f"{path}: cannot read job file: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise JobError(f"{path}: invalid TOML: {exc}") from None
    job = _build(raw, path, tier=overrides.tier if overrides else None)
    return _apply(job, overrides) if overrides else job


def job_from_mapping(raw: Mapping[str, Any], where: str, base: Path) -> Job:
    """A job from the same tables a job file holds (for the Python API); ``where`` names it
    in messages, and relative paths are relative to ``base``."""
    return _build(dict(raw), Path(where), base)


def resolve_api_key(job: Job, api_key: str | None = None, alternative: str = "") -> str:
    """The key: ``api_key`` when given, else the environment variable the job names; a
    JobError when there is none or it cannot go in a header (a BatchgenWarning when
    surrounding whitespace was stripped)."""
    var = job.model.api_key_env
    given = api_key if api_key is not None else os.environ.get(var, "")
    if not given.strip():
        how = alternative or "or pass api_key="
        also = " or $GOOGLE_API_KEY" if var == SDK_KEY_ENVS[1] else ""
        raise JobError(f"{job.path}: no API key: set ${var}{also} (model.api_key_env), {how}")
    source = "api_key=" if api_key is not None else f"${var} (model.api_key_env)"
    return checked_key(given, f"{job.path}: {source}")


def sdk_key_env() -> str:
    """The variable google-genai reads the key from: GOOGLE_API_KEY when it is set (it wins
    over GEMINI_API_KEY, with a warning), else GEMINI_API_KEY."""
    return next((n for n in SDK_KEY_ENVS if os.environ.get(n, "").strip()), SDK_KEY_ENVS[1])


def key_env_warning(job: Job) -> str | None:
    """A warning when both of google-genai's variables hold keys and the job reads the first."""
    google, gemini = (os.environ.get(n, "").strip() for n in SDK_KEY_ENVS)
    if job.model.api_key_env != SDK_KEY_ENVS[0] or not gemini or gemini == google:
        return None
    return (
        "both $GOOGLE_API_KEY and $GEMINI_API_KEY are set: using $GOOGLE_API_KEY, as google-genai "
        "does (model.api_key_env names the one to use)"
    )


def _build(
    raw: dict[str, Any], path: Path, base: Path | None = None, tier: str | None = None
) -> Job:
    """The job; ``tier`` (``--tier``) replaces the job's own before the tier's defaults apply."""
    raw = _given(raw)
    file = convert(raw, JobFile, str(path))
    base = path.parent if base is None else base
    schema = _schema(file, base, path)
    named_env = isinstance(raw.get("model"), dict) and "api_key_env" in raw["model"]
    model = msgspec.structs.replace(
        file.model,
        name=file.model.name.removeprefix("models/"),
        api_key_env=file.model.api_key_env if named_env else sdk_key_env(),
        base_url=_base_url(file.model.base_url, path),
        tier=file.model.tier if tier is None else _tier(tier, "--tier"),
    )
    limits = file.limits
    if model.tier == "flex" and "timeout_seconds" not in raw.get("limits", {}):
        limits = msgspec.structs.replace(limits, timeout_seconds=FLEX_TIMEOUT_SECONDS)
    if file.batch.poll_max_seconds < file.batch.poll_initial_seconds:
        raise JobError(
            f"{path}: batch.poll_max_seconds ({file.batch.poll_max_seconds:g}) is below "
            f"batch.poll_initial_seconds ({file.batch.poll_initial_seconds:g}); raise it"
        )
    given_output = "directory" in raw.get("output", {})
    directory = file.output.directory if given_output else Path("out", path.stem)
    input_path = _resolve(base, file.input.path)
    return Job(
        name=path.stem if file.name is None else file.name,
        path=path,
        input=msgspec.structs.replace(
            file.input, path=input_path, format=_format(input_path, file.input.format, path)
        ),
        model=model,
        prompt=_prompt(file, base, path),
        response_schema=schema.wire,
        limits=limits,
        output=msgspec.structs.replace(file.output, directory=_resolve(base, directory)),
        generation=_generation(file.generation, path),
        retry=file.retry,
        batch=file.batch,
        media=msgspec.structs.replace(
            file.media,
            directory=input_path.parent
            if file.media.directory is None
            else _resolve(base, file.media.directory),
        ),
        schema_dialect=schema.dialect,
        schema_source=schema.source,
        safety_settings=_safety(file.safety_settings, path),
        cache=file.cache,
    )


_TABLES = ("input", "model", "prompt", "limits", "retry", "output", "batch", "media", "cache")


def _prompt(file: JobFile, base: Path, path: Path) -> PromptSpec:
    """The prompt with its context files resolved against the job file's folder."""
    spec = file.prompt
    for column in spec.media_types:
        if column not in spec.media:
            raise JobError(
                f"{path}: prompt.media_types.{column}: {column!r} is not in prompt.media"
            )
    context = tuple(str(_resolve(base, c)) for c in spec.context)
    return msgspec.structs.replace(spec, context=context)


def _enum(value: str, names: tuple[str, ...], where: str, prefix: str = "") -> str:
    """An enum name as the API spells it (any case in the job), or a JobError listing them."""
    upper = value.upper()
    for name in names:
        if upper in (name, name.removeprefix(prefix)):
            return name
    raise JobError(f"{where} must be one of {', '.join(names)}, not {value!r}")


def _safety(settings: tuple[SafetySetting, ...], path: Path) -> tuple[SafetySetting, ...]:
    """The safety settings with their names checked; at most one per category, as the API takes."""
    checked, seen = [], set()
    for i, s in enumerate(settings):
        where = f"{path}: safety_settings[{i}]"
        category = _enum(s.category, HARM_CATEGORIES, f"{where}.category", "HARM_CATEGORY_")
        if category in seen:
            raise JobError(f"{where}.category: {category} is set twice; keep one")
        seen.add(category)
        threshold = _enum(s.threshold, HARM_THRESHOLDS, f"{where}.threshold")
        checked.append(SafetySetting(category, threshold))
    return tuple(checked)


def _given(raw: dict[str, Any]) -> dict[str, Any]:
    """The keys given: the Python API's None means "not given" (TOML has no null)."""
    return {
        k: {n: v for n, v in value.items() if v is not None}
        if k in _TABLES and isinstance(value, dict)
        else value
        for k, value in raw.items()
        if value is not None
    }


def job_file_schema() -> dict[str, Any]:
    """The JSON Schema of a job file (as TOML reads it), from the same declaration."""
    body = msgspec.json.schema(JobFile, schema_hook=schema_hook)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **body}


def _resolve(base: Path, relative: Path | str) -> Path:
    """A path from the job file, relative to the job file's folder, without ``..`` noise; an
    object-store URL as it is (:func:`~batchgen.job.location.store_url` reads it back)."""
    if store_url(relative) is not None:
        return Path(relative)
    return Path(os.path.normpath(base / relative))


def _format(file: Path, given: Format, path: Path) -> Format:
    if given != "auto":
        return given
    name = file.name.lower()
    fmt = next((f for end, f in INPUT_FORMATS.items() if name.endswith(end)), None)
    if fmt is None:
        raise JobError(
            f"{path}: input.path {str(file)!r}: cannot tell the format from the extension "
            f"({', '.join(INPUT_FORMATS)}); set input.format"
        )
    return fmt


def _tier(value: str, where: str) -> Tier:
    for tier in TIERS:
        if value == tier:
            return tier
    choices = " or ".join(f'"{t}"' for t in TIERS)
    raise JobError(f"{where} must be {choices}, not {value!r}")


def checked_base_url(url: str, where: str) -> str:
    """A base URL as ``model.base_url`` takes it (for callers with no job file: ``cancel``)."""
    return _base_url(url, where)


def _base_url(url: str, where: Path | str) -> str:
    url = url.rstrip("/")
    if not re.match(r"^https?://[^/\s]+", url):
        raise JobError(f"{where}: model.base_url must be an http(s) URL, not {redact_url(url)!r}")
    problem = unsendable(url) or ("a space" if " " in url else None)
    if problem is not None:  # it would fail in the first request, in a worker
        raise JobError(
            f"{where}: model.base_url holds {problem}, which cannot go in a request; "
            "write the URL alone"
        )
    return url.removesuffix("/v1beta")


_SCHEMA_KEYS = ("response_schema", "schema_file", "response_json_schema", "json_schema_file",
                "schema")  # fmt: skip


def _schema(file: JobFile, base: Path, path: Path) -> ResponseSchema:
    """The one schema the job gives, by whichever of the schema keys it uses."""
    given = [k for k in _SCHEMA_KEYS if getattr(file, k) is not None]
    if len(given) != 1:
        said = f"it gives {' and '.join(given)}" if given else "it gives none"
        raise JobError(
            f"{path}: give exactly one of [response_schema], schema_file (Gemini's Schema), "
            f"[response_json_schema], json_schema_file (JSON Schema) or schema = "
            f"'module:Model' (pydantic); {said}"
        )
    key = given[0]
    if file.schema is not None:
        target = file.schema
        return json_schema(load_pydantic_schema(target, base, str(path)), f"{path}: schema",
                           f"schema = {target!r}")  # fmt: skip
    if key.endswith("_file"):
        value, where = _read_schema_file(getattr(file, key), key, base, path)
    else:
        value, where = getattr(file, key), str(path)
    if key in ("response_schema", "schema_file"):
        return gemini_schema(value, where, key)
    return json_schema(value, where, key)


def _read_schema_file(file: str, key: str, base: Path, path: Path) -> tuple[Any, str]:
    schema_path = _resolve(base, file)
    try:
        where = store_url(schema_path) or str(schema_path)
        return json.loads(read_bytes(schema_path).decode("utf-8")), where
    except OSError as exc:
        raise JobError(f"{path}: {key} {file!r}: cannot read: {exc.strerror}") from None
    except StoreError as exc:
        raise JobError(f"{path}: {key} {file!r}: cannot read: {exc}") from None
    except ValueError as exc:
        raise JobError(f"{path}: {key} {file!r}: invalid JSON: {exc}") from None


def _camel_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            re.sub(r"_([a-z])", lambda m: m.group(1).upper(), k): _camel_keys(v)
            for k, v in value.items()
        }
    return value


def _generation(table: dict[str, Any], path: Path) -> dict[str, Any]:
    """generationConfig as given; snake_case keys are camelCased, as the API names them."""
    config: dict[str, Any] = _camel_keys(table)
    for key in config:
        if key == "responseJsonSchema":
            raise JobError(
                f"{path}: generation.responseJsonSchema: put a JSON Schema in "
                "[response_json_schema] or json_schema_file instead (batchgen sends it)"
            )
        if key in ("responseMimeType", "responseSchema"):
            raise JobError(
                f"{path}: generation.{key} is set by batchgen; put the schema in "
                "[response_schema] or schema_file"
            )
        if key not in GENERATION_KEYS:
            raise JobError(
                f"{path}: generation: unknown key {key!r} "
                f"(allowed: {', '.join(sorted(GENERATION_KEYS))})"
            )
    _check_candidates(config.get("candidateCount"), path)
    if "thinkingConfig" in config:
        config["thinkingConfig"] = _thinking(config["thinkingConfig"], path)
    return config


def _check_candidates(count: Any, path: Path) -> None:
    if count is None:
        return
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_CANDIDATES:
        raise JobError(
            f"{path}: generation.candidateCount must be a whole number from 1 to "
            f"{MAX_CANDIDATES}, not {count!r}"
        )


_THINKING_KEYS = {"thinkingLevel": str, "thinkingBudget": int, "includeThoughts": bool}


def _thinking(table: Any, path: Path) -> dict[str, Any]:
    """generation.thinkingConfig: its three keys, of their types; thinkingLevel a known name
    (in any case, as the API reads it)."""
    where = f"{path}: generation.thinkingConfig"
    if not isinstance(table, dict):
        raise JobError(f"{where} must be a table (thinkingLevel, thinkingBudget, includeThoughts)")
    for key, value in table.items():
        kind = _THINKING_KEYS.get(key)
        if kind is None:
            raise JobError(f"{where}: unknown key {key!r} (allowed: {', '.join(_THINKING_KEYS)})")
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise JobError(f"{where}.{key} must be {kind.__name__}, not {value!r}")
    if "thinkingLevel" in table and "thinkingBudget" in table:
        raise JobError(f"{where}: set thinkingLevel or thinkingBudget, not both (the API refuses)")
    if "thinkingLevel" in table:  # checked, sent as written: the request hash stays the same
        _enum(table["thinkingLevel"], THINKING_LEVELS, f"{where}.thinkingLevel")
    return dict(table)


def _apply(job: Job, o: Overrides) -> Job:
    """Apply command-line overrides; their paths are relative to the working directory."""
    inp, model, out = job.input, job.model, job.output
    if o.input is not None:
        inp = replace(inp, path=o.input, format=_format(o.input, "auto", Path("--input")))
    if o.model is not None:
        model = replace(model, name=o.model.removeprefix("models/"))
    if o.base_url is not None:
        model = replace(model, base_url=_base_url(o.base_url, "--base-url"))
    if o.output is not None:
        out = replace(out, directory=o.output)
    return dataclasses.replace(job, input=inp, model=model, output=out)
