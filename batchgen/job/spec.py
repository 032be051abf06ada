"""The job file: one TOML file describes one job. Everything is checked here, before any work.

Relative paths in a job file are relative to the job file's own folder, so a job runs the same
from any working directory (cron starts in $HOME).
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

from batchgen.errors import JobError
from batchgen.job.response_schema import (
    GEMINI,
    ResponseSchema,
    gemini_schema,
    json_schema,
    load_pydantic_schema,
)
from batchgen.redact import redact_url

DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com"
INPUT_FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
# The service tiers a job can ask for (README "Tiers"; docs/gemini-api.md §11). Flex answers in
# minutes, not seconds (its target is 1-15 min), so a Flex job waits longer for each call unless
# it sets limits.timeout_seconds itself.
TIERS = ("standard", "flex", "batch")
FLEX_TIMEOUT_SECONDS = 900.0

# generationConfig fields passed through as given (GenerationConfig in generative_service.proto).
# responseMimeType and responseSchema are batchgen's own; candidateCount is left out because
# batchgen reads one candidate per row and would pay for the others.
GENERATION_KEYS = frozenset(
    {
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

_SECTIONS: dict[str, frozenset[str]] = {
    "": frozenset(
        {
            "name",
            "schema_file",
            "input",
            "model",
            "prompt",
            "generation",
            "response_schema",
            "response_json_schema",
            "json_schema_file",
            "schema",
            "limits",
            "retry",
            "output",
            "batch",
        }
    ),
    "input": frozenset({"path", "format", "id_column", "carry"}),
    "model": frozenset({"name", "base_url", "api_version", "api_key_env", "tier"}),
    "prompt": frozenset({"user", "system"}),
    "limits": frozenset(
        {
            "requests_per_minute",
            "tokens_per_minute",
            "requests_per_day",
            "concurrency",
            "max_concurrency",
            "timeout_seconds",
            "max_response_mb",
        }
    ),
    "batch": frozenset({"rows_per_chunk", "poll_initial_seconds", "poll_max_seconds", "fallback"}),
    "output": frozenset({"directory", "explode", "flush_rows", "flush_seconds", "sync_seconds"}),
    "retry": frozenset(
        {
            "attempts",
            "answer_attempts",
            "row_deadline_seconds",
            "backoff_initial_seconds",
            "backoff_max_seconds",
            "max_server_delay_seconds",
            "outage_minutes",
            "flex_fallback_seconds",
        }
    ),
}


@dataclass(frozen=True)
class InputSpec:
    path: Path
    format: str
    id_column: str | None = None
    carry: tuple[str, ...] = ()


@dataclass(frozen=True)
class ModelSpec:
    name: str
    base_url: str = DEFAULT_BASE_URL
    api_version: str = "v1beta"
    api_key_env: str = "GEMINI_API_KEY"
    tier: str = "standard"  # one of TIERS: how the calls are served and billed

    @property
    def url(self) -> str:
        """The generateContent endpoint."""
        return f"{self.base_url}/{self.api_version}/models/{self.name}:generateContent"


@dataclass(frozen=True)
class PromptSpec:
    user: str
    system: str | None = None


@dataclass(frozen=True)
class LimitsSpec:
    """The quota and how many calls may be in flight.

    ``concurrency = "auto"`` (the default) sets ``auto_concurrency``: the calls in flight follow
    the allowed rate times the observed latency (limits.ConcurrencyController), up to
    ``max_concurrency`` (enough for 60 s answers at 2,000 requests a minute). An integer pins
    ``concurrency``; under "auto" that field is not used.
    """

    requests_per_minute: int = 1000
    tokens_per_minute: int | None = None  # input (prompt) tokens, as the API counts its TPM
    requests_per_day: int | None = None  # counted per Pacific day, when the API resets it
    concurrency: int = 32
    auto_concurrency: bool = True
    max_concurrency: int = 2048
    timeout_seconds: float = 600.0
    max_response_mb: float = 32.0  # a bigger answer (after decompression) fails the call

    @property
    def max_response_bytes(self) -> int:
        return int(self.max_response_mb * 1024 * 1024)


@dataclass(frozen=True)
class RetrySpec:
    """How hard to try one row.

    ``attempts`` bounds all calls for a row; transient HTTP failures (429, 5xx, timeouts, dropped
    connections) use them. Answer failures (blocked, SAFETY, invalid JSON, schema) are retried
    until ``answer_attempts`` of them. No retry starts after ``row_deadline_seconds``. A delay
    the server asks for (RetryInfo, Retry-After) is waited at most ``max_server_delay_seconds``.
    A run whose calls have all failed server-side for ``outage_minutes`` stops (exit 4).
    A Flex row that has been refused for lack of capacity (429, 503) for
    ``flex_fallback_seconds`` since its first such refusal is retried at the standard tier.
    """

    attempts: int = 5
    answer_attempts: int = 2
    row_deadline_seconds: float = 900.0
    backoff_initial_seconds: float = 1.0
    backoff_max_seconds: float = 60.0
    max_server_delay_seconds: float = 300.0
    outage_minutes: float = 10.0
    flex_fallback_seconds: float | None = None  # Flex capacity errors this long → standard


BATCH_FALLBACKS = ("none", "online")


@dataclass(frozen=True)
class BatchSpec:
    """How a ``tier = "batch"`` run uses Batch Mode.

    ``rows_per_chunk`` rows go in one input file and one batch job; the job is polled after
    ``poll_initial_seconds``, then ever less often up to every ``poll_max_seconds``. With
    ``fallback = "online"`` the rows a batch answered with an error (or left out, or lost with
    an expired or failed batch) are asked again online, at the standard tier, in the same run;
    with ``"none"`` they are failure records that the next run submits again.
    """

    rows_per_chunk: int = 10_000
    poll_initial_seconds: float = 10.0
    poll_max_seconds: float = 120.0
    fallback: str = "none"


@dataclass(frozen=True)
class OutputSpec:
    directory: Path
    explode: bool = False
    flush_rows: int = 1000
    flush_seconds: float = 30.0
    sync_seconds: float = 1.0  # the journal is fsynced at most this often (group commit)


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
    generation: dict[str, Any] = field(default_factory=dict)
    retry: RetrySpec = field(default_factory=RetrySpec)
    batch: BatchSpec = field(default_factory=BatchSpec)
    schema_dialect: str = GEMINI
    schema_source: str = "response_schema"

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
    """The key: ``api_key`` when given, else the environment variable the job names."""
    key = (api_key if api_key is not None else os.environ.get(job.model.api_key_env, "")).strip()
    if not key:
        how = alternative or "or pass api_key="
        raise JobError(
            f"{job.path}: no API key: set ${job.model.api_key_env} (model.api_key_env), {how}"
        )
    return key


def _build(
    raw: dict[str, Any], path: Path, base: Path | None = None, tier: str | None = None
) -> Job:
    """The job; ``tier`` (``--tier``) replaces the job's own before the tier's defaults apply."""
    _check_keys(raw, "", path)
    base = path.parent if base is None else base
    schema = _schema(raw, base, path)
    model = _model(_table(raw, "model", path), path, tier)
    return Job(
        name=_opt(raw, "name", str, path, "", path.stem),
        path=path,
        input=_input(_table(raw, "input", path), base, path),
        model=model,
        prompt=_prompt(_table(raw, "prompt", path), path),
        response_schema=schema.wire,
        limits=_limits(_table(raw, "limits", path, required=False), path, model.tier),
        output=_output(_table(raw, "output", path, required=False), base, path),
        generation=_generation(_table(raw, "generation", path, required=False), path),
        retry=_retry(_table(raw, "retry", path, required=False), path),
        batch=_batch(_table(raw, "batch", path, required=False), path),
        schema_dialect=schema.dialect,
        schema_source=schema.source,
    )


def _check_keys(table: Mapping[str, Any], section: str, path: Path) -> None:
    allowed = _SECTIONS[section]
    for key in table:
        if key not in allowed:
            where = f"[{section}] " if section else ""
            raise JobError(
                f"{path}: {where}unknown key {key!r} (allowed: {', '.join(sorted(allowed))})"
            )


def _table(raw: Mapping[str, Any], name: str, path: Path, required: bool = True) -> dict[str, Any]:
    value = raw.get(name)
    if value is None:
        if required:
            raise JobError(f"{path}: missing section [{name}]")
        return {}
    if not isinstance(value, dict):
        raise JobError(f"{path}: {name} must be a table ([{name}])")
    if name in _SECTIONS:
        _check_keys(value, name, path)
    return value


def _opt(
    table: Mapping[str, Any],
    key: str,
    kind: type | tuple[type, ...],
    path: Path,
    section: str,
    default: Any = None,
) -> Any:
    value = table.get(key, default)
    wrong_bool = isinstance(value, bool) and kind is not bool
    if value is not None and (wrong_bool or not isinstance(value, kind)):
        label = f"{section}.{key}" if section else key
        wanted = (
            "a number"
            if isinstance(kind, tuple)
            else {
                str: "a string",
                int: "a whole number",
                bool: "true or false",
                list: "a list",
            }.get(kind, kind.__name__)
        )
        raise JobError(f"{path}: {label} must be {wanted}, not {value!r}")
    return value


def _req(table: Mapping[str, Any], key: str, kind: type, path: Path, section: str) -> Any:
    if key not in table:
        raise JobError(f"{path}: [{section}] needs {key!r}")
    return _opt(table, key, kind, path, section)


def _positive(value: Any, key: str, path: Path) -> Any:
    if value <= 0:
        raise JobError(f"{path}: {key} must be > 0, not {value}")
    return value


def _resolve(base: Path, relative: str) -> Path:
    """A path from the job file, relative to the job file's folder, without ``..`` noise."""
    return Path(os.path.normpath(base / relative))


def _input(table: dict[str, Any], base: Path, path: Path) -> InputSpec:
    file = _resolve(base, _req(table, "path", str, path, "input"))
    carry = _opt(table, "carry", list, path, "input", [])
    if not all(isinstance(c, str) for c in carry):
        raise JobError(f"{path}: input.carry must be a list of column names")
    return InputSpec(
        path=file,
        format=_format(file, _opt(table, "format", str, path, "input"), path),
        id_column=_opt(table, "id_column", str, path, "input"),
        carry=tuple(carry),
    )


def _format(file: Path, given: str | None, path: Path) -> str:
    if given is not None:
        if given not in ("csv", "parquet"):
            raise JobError(f"{path}: input.format must be 'csv' or 'parquet', not {given!r}")
        return given
    fmt = INPUT_FORMATS.get(file.suffix.lower())
    if fmt is None:
        raise JobError(
            f"{path}: input.path {str(file)!r}: cannot tell the format from the extension "
            "(.csv, .parquet); set input.format"
        )
    return fmt


def _model(table: dict[str, Any], path: Path, tier: str | None = None) -> ModelSpec:
    base_url = _opt(table, "base_url", str, path, "model", DEFAULT_BASE_URL)
    given = _opt(table, "tier", str, path, "model", "standard")
    return ModelSpec(
        name=_req(table, "name", str, path, "model").removeprefix("models/"),
        base_url=_base_url(base_url, path),
        api_version=_opt(table, "api_version", str, path, "model", "v1beta"),
        api_key_env=_opt(table, "api_key_env", str, path, "model", "GEMINI_API_KEY"),
        tier=_tier(tier, "--tier") if tier is not None else _tier(given, f"{path}: model.tier"),
    )


def _tier(value: str, where: str) -> str:
    if value not in TIERS:
        choices = " or ".join(f'"{t}"' for t in TIERS)
        raise JobError(f"{where} must be {choices}, not {value!r}")
    return value


def checked_base_url(url: str, where: str) -> str:
    """A base URL as ``model.base_url`` takes it (for callers with no job file: ``cancel``)."""
    return _base_url(url, where)


def _base_url(url: str, where: Path | str) -> str:
    url = url.rstrip("/")
    if not re.match(r"^https?://[^/\s]+", url):
        raise JobError(f"{where}: model.base_url must be an http(s) URL, not {redact_url(url)!r}")
    return url.removesuffix("/v1beta")


def _prompt(table: dict[str, Any], path: Path) -> PromptSpec:
    return PromptSpec(
        user=_req(table, "user", str, path, "prompt"),
        system=_opt(table, "system", str, path, "prompt"),
    )


_SCHEMA_KEYS = ("response_schema", "schema_file", "response_json_schema", "json_schema_file",
                "schema")  # fmt: skip


def _schema(raw: dict[str, Any], base: Path, path: Path) -> ResponseSchema:
    """The one schema the job gives, by whichever of the schema keys it uses."""
    given = [k for k in _SCHEMA_KEYS if raw.get(k) is not None]
    if len(given) != 1:
        said = f"it gives {' and '.join(given)}" if given else "it gives none"
        raise JobError(
            f"{path}: give exactly one of [response_schema], schema_file (Gemini's Schema), "
            f"[response_json_schema], json_schema_file (JSON Schema) or schema = "
            f"'module:Model' (pydantic); {said}"
        )
    key = given[0]
    if key == "schema":
        target = _opt(raw, "schema", str, path, "")
        return json_schema(load_pydantic_schema(target, base, str(path)), f"{path}: schema",
                           f"schema = {target!r}")  # fmt: skip
    if key.endswith("_file"):
        value, where = _read_schema_file(_opt(raw, key, str, path, ""), key, base, path)
    else:
        value, where = raw[key], str(path)
    if key in ("response_schema", "schema_file"):
        return gemini_schema(value, where, key)
    return json_schema(value, where, key)


def _read_schema_file(file: str, key: str, base: Path, path: Path) -> tuple[Any, str]:
    schema_path = _resolve(base, file)
    try:
        return json.loads(schema_path.read_text(encoding="utf-8")), str(schema_path)
    except OSError as exc:
        raise JobError(f"{path}: {key} {file!r}: cannot read: {exc.strerror}") from None
    except ValueError as exc:
        raise JobError(f"{path}: {key} {file!r}: invalid JSON: {exc}") from None


def _limits(table: dict[str, Any], path: Path, tier: str = "standard") -> LimitsSpec:
    d = LimitsSpec()
    rpm = _opt(table, "requests_per_minute", int, path, "limits", d.requests_per_minute)
    wait = FLEX_TIMEOUT_SECONDS if tier == "flex" else d.timeout_seconds
    timeout = _opt(table, "timeout_seconds", (int, float), path, "limits", wait)
    tpm = _opt(table, "tokens_per_minute", int, path, "limits")
    rpd = _opt(table, "requests_per_day", int, path, "limits")
    cap = _opt(table, "max_concurrency", int, path, "limits", d.max_concurrency)
    pinned = _concurrency(table.get("concurrency", "auto"), path)
    max_mb = _opt(table, "max_response_mb", (int, float), path, "limits", d.max_response_mb)
    return LimitsSpec(
        requests_per_minute=_positive(rpm, "limits.requests_per_minute", path),
        tokens_per_minute=None if tpm is None else _positive(tpm, "limits.tokens_per_minute", path),
        requests_per_day=None if rpd is None else _positive(rpd, "limits.requests_per_day", path),
        concurrency=d.concurrency if pinned is None else pinned,
        auto_concurrency=pinned is None,
        max_concurrency=_positive(cap, "limits.max_concurrency", path),
        timeout_seconds=float(_positive(timeout, "limits.timeout_seconds", path)),
        max_response_mb=float(_positive(max_mb, "limits.max_response_mb", path)),
    )


def _concurrency(value: Any, path: Path) -> int | None:
    """``limits.concurrency``: "auto" (None) or a positive whole number that pins it."""
    if value == "auto":
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise JobError(
            f'{path}: limits.concurrency must be a whole number or "auto", not {value!r}'
        )
    return int(_positive(value, "limits.concurrency", path))


def _retry(table: dict[str, Any], path: Path) -> RetrySpec:
    d = RetrySpec()
    values: dict[str, Any] = {}
    for key in ("attempts", "answer_attempts"):
        values[key] = _positive(_opt(table, key, int, path, "retry", getattr(d, key)),
                                f"retry.{key}", path)  # fmt: skip
    floats = ("row_deadline_seconds", "backoff_initial_seconds", "backoff_max_seconds")
    for key in (*floats, "max_server_delay_seconds", "outage_minutes"):
        value = _opt(table, key, (int, float), path, "retry", getattr(d, key))
        values[key] = float(_positive(value, f"retry.{key}", path))
    fallback = _opt(table, "flex_fallback_seconds", (int, float), path, "retry")
    if fallback is not None:
        values["flex_fallback_seconds"] = float(
            _positive(fallback, "retry.flex_fallback_seconds", path)
        )
    return RetrySpec(**values)


def _batch(table: dict[str, Any], path: Path) -> BatchSpec:
    d = BatchSpec()
    rows = _opt(table, "rows_per_chunk", int, path, "batch", d.rows_per_chunk)
    first = _opt(table, "poll_initial_seconds", (int, float), path, "batch", d.poll_initial_seconds)
    most = _opt(table, "poll_max_seconds", (int, float), path, "batch", d.poll_max_seconds)
    fallback = _opt(table, "fallback", str, path, "batch", d.fallback)
    if fallback not in BATCH_FALLBACKS:
        raise JobError(f'{path}: batch.fallback must be "none" or "online", not {fallback!r}')
    spec = BatchSpec(
        rows_per_chunk=_positive(rows, "batch.rows_per_chunk", path),
        poll_initial_seconds=float(_positive(first, "batch.poll_initial_seconds", path)),
        poll_max_seconds=float(_positive(most, "batch.poll_max_seconds", path)),
        fallback=fallback,
    )
    if spec.poll_max_seconds < spec.poll_initial_seconds:
        raise JobError(
            f"{path}: batch.poll_max_seconds ({spec.poll_max_seconds:g}) is below "
            f"batch.poll_initial_seconds ({spec.poll_initial_seconds:g}); raise it"
        )
    return spec


def _output(table: dict[str, Any], base: Path, path: Path) -> OutputSpec:
    d = OutputSpec(directory=Path())
    flush_s = _opt(table, "flush_seconds", (int, float), path, "output", d.flush_seconds)
    sync_s = _opt(table, "sync_seconds", (int, float), path, "output", d.sync_seconds)
    return OutputSpec(
        directory=_resolve(base, _opt(table, "directory", str, path, "output", f"out/{path.stem}")),
        explode=_opt(table, "explode", bool, path, "output", False),
        flush_rows=_positive(
            _opt(table, "flush_rows", int, path, "output", d.flush_rows), "output.flush_rows", path
        ),
        flush_seconds=float(_positive(flush_s, "output.flush_seconds", path)),
        sync_seconds=float(_positive(sync_s, "output.sync_seconds", path)),
    )


def _camel_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            re.sub(r"_([a-z])", lambda m: m.group(1).upper(), k): _camel_keys(v)
            for k, v in value.items()
        }
    return value


def _generation(table: dict[str, Any], path: Path) -> dict[str, Any]:
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
    return config


def _apply(job: Job, o: Overrides) -> Job:
    """Apply command-line overrides; their paths are relative to the working directory."""
    inp, model, out = job.input, job.model, job.output
    if o.input is not None:
        inp = replace(inp, path=o.input, format=_format(o.input, None, Path("--input")))
    if o.model is not None:
        model = replace(model, name=o.model.removeprefix("models/"))
    if o.base_url is not None:
        model = replace(model, base_url=_base_url(o.base_url, "--base-url"))
    if o.output is not None:
        out = replace(out, directory=o.output)
    return replace(job, input=inp, model=model, output=out)
