"""The Python API: generate from a DataFrame, run a job file, estimate, report, status.

Every function has an async twin (``agenerate``, ``arun``, ...). The sync forms work inside a
running event loop too (Jupyter, an async service): there they run on their own loop in a
worker thread. The library resolves the API key itself (``api_key=``, else the environment
variable the job names), never installs signal handlers unless asked, and its messages name
parameters, not command-line flags.

``generate`` returns one DataFrame in input order: the answer's typed columns (Arrow-backed
pandas dtypes, exactly the types the command line writes to Parquet), then ``status`` ("ok" or
"failed"), ``error`` (the failure's category and message) and the token usage of each row.
Failed rows stay in the frame, with nulls in the answer's columns, so a row is never silently
missing.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeAlias

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from batchgen.errors import InputError, JobError
from batchgen.input.reader import MissingColumnError
from batchgen.job.spec import (
    DEFAULT_BASE_URL,
    Job,
    ModelSpec,
    Overrides,
    checked_base_url,
    job_from_mapping,
    load_job,
    resolve_api_key,
    sdk_key_env,
)
from batchgen.job.wire import checked_key
from batchgen.reports.estimate import Estimate, estimate_job
from batchgen.reports.report import Report, report
from batchgen.reports.status import OutputStatus
from batchgen.reports.status import output_status as read_status
from batchgen.run.notebook import library_progress
from batchgen.run.runner import RunOptions, RunSummary, arun_job, run_sync
from batchgen.store.layout import RESULTS_DIR
from batchgen.store.outdir import OutputDir

__all__ = [
    "aestimate_file",
    "cancel_batches",
    "agenerate",
    "aoutput_status",
    "areport_outputs",
    "arun_file",
    "estimate_file",
    "generate",
    "output_status",
    "report_outputs",
    "run_file",
]

Data: TypeAlias = pd.DataFrame | pa.Table | Sequence[Mapping[str, Any]]
_POSITION = "__batchgen_row"


def generate(
    data: Data,
    *,
    prompt: str,
    schema: Mapping[str, Any],
    model: str,
    system: str | None = None,
    base_url: str | None = None,
    api_key: str | None = None,
    **options: Any,
) -> pd.DataFrame:
    """Call ``model`` once per row of ``data`` and return the typed answers in input order.

    Args:
        data: a pandas DataFrame, a pyarrow Table, or a list of dicts.
        prompt: the user prompt, a Jinja2 template over the row's columns (``{{ title }}``).
        schema: the response schema (Gemini's OpenAPI-subset ``responseSchema``).
        model: the model id, e.g. ``"gemini-3.8-flash"``.
        system: an optional system instruction (also a template).
        base_url: the API (or a proxy speaking v1beta); Google's by default.
        api_key: the key; by default ``$GOOGLE_API_KEY`` when set, else ``$GEMINI_API_KEY``
            (as google-genai reads it), or the variable ``api_key_env=`` names.
        **options: ``output`` (a directory to keep the output in and resume from; a temporary
            one by default), ``generation`` (generationConfig fields), ``limits``, ``retry``
            (the job file's sections, as dicts), ``explode``, ``dedupe`` (identical requests
            paid once), ``examples`` (few-shot turns: dicts of ``user`` and ``model``),
            ``safety_settings`` (dicts of ``category`` and ``threshold``), ``cache`` (``"auto"``,
            the default: the prefix every row shares in a context cache when that is cheaper;
            ``"off"``), ``carry``,
            ``api_key_env``, ``tier`` (``"flex"``: half price, slower), ``max_cost``, ``prices``,
            ``time_budget``, ``engine`` (``"ray"``: the calls made across a Ray cluster under
            one quota; ``ray_address`` which cluster, by default a local instance), ``media``
            (columns holding media: file paths, relative to the working directory; bytes;
            ``https://``/``gs://`` URIs; ``files/...`` names), ``context`` (files sent before
            every row's parts), ``media_types`` (a MIME type per media column),
            ``inline_max_mb``,
            ``progress`` (``None``, the default: a progress bar only in a
            notebook, that is inside an IPython kernel; ``True``: always; ``False``: never; or a
            :class:`batchgen.run.progress.Progress`).

    Returns:
        One row per input row (per item when ``explode=True``): the answer's columns, then
        ``status``, ``error`` and the usage columns.
    """
    return run_sync(
        agenerate(data, prompt=prompt, schema=schema, model=model, system=system,
                  base_url=base_url, api_key=api_key, **options)
    )  # fmt: skip


async def agenerate(
    data: Data,
    *,
    prompt: str,
    schema: Mapping[str, Any],
    model: str,
    system: str | None = None,
    base_url: str | None = None,
    api_key: str | None = None,
    **options: Any,
) -> pd.DataFrame:
    """:func:`generate`, for callers with an event loop of their own."""
    output = options.pop("output", None)
    options["progress"] = library_progress(options.get("progress"))
    with tempfile.TemporaryDirectory(prefix="batchgen-") as scratch:
        folder = Path(scratch)
        table = await asyncio.to_thread(_table, data)
        source = folder / "input.parquet"
        await asyncio.to_thread(pq.write_table, table, source)
        out = Path(output) if output is not None else folder / "out"
        job = _job(source, out, prompt, schema, model, system, base_url, options)
        # a run that stops raises its BatchgenError (with ``summary``); ``output=`` keeps
        # what it did, for the next call to resume
        try:
            await arun_job(job, _run_options(job, api_key, options))
        except MissingColumnError as exc:  # the scratch file's name would mean nothing
            need = exc.need.replace("input.carry", "carry=")
            raise InputError(
                f"the {_kind(data)} has no column {exc.column!r} ({need}; it has: "
                f"{', '.join(exc.available) or 'no columns'}){exc.near}"
            ) from None
        return await asyncio.to_thread(_collect, out)


def run_file(job_file: str | Path, *, api_key: str | None = None, **options: Any) -> RunSummary:
    """Run a job file (as ``batchgen run``); options are :class:`batchgen.RunOptions`'s, and
    ``input``, ``output``, ``model``, ``base_url`` and ``tier`` override the job file's;
    ``engine="ray"`` (and ``ray_address``) runs it as ``batchgen run --engine ray``;
    ``progress=`` as for :func:`generate` (by default a bar only in a notebook)."""
    return run_sync(arun_file(job_file, api_key=api_key, **options))


async def arun_file(
    job_file: str | Path, *, api_key: str | None = None, **options: Any
) -> RunSummary:
    """:func:`run_file`, for callers with an event loop of their own."""
    job = await asyncio.to_thread(load_job, job_file, _overrides(options))
    options["progress"] = library_progress(options.get("progress"))
    return await arun_job(job, _run_options(job, api_key, options))


def estimate_file(
    job_file: str | Path, *, api_key: str | None = None, offline: bool = False, **options: Any
) -> Estimate:
    """Estimate a job file's tokens, cost and time (as ``batchgen estimate``): countTokens on
    a sample (``sample=``, default 20 rows), or offline; ``prices=`` a PriceTable."""
    job = load_job(job_file, _overrides(options))
    key = "" if offline else resolve_api_key(job, api_key, "or pass offline=True")
    return estimate_job(job, api_key=key, offline=offline, **options)


async def aestimate_file(
    job_file: str | Path, *, api_key: str | None = None, offline: bool = False, **options: Any
) -> Estimate:
    """:func:`estimate_file`, without blocking the event loop."""
    return await asyncio.to_thread(
        lambda: estimate_file(job_file, api_key=api_key, offline=offline, **options)
    )


def report_outputs(
    outputs: str | Path | Sequence[str | Path], *, by: str = "job", prices: Any = None
) -> Report:
    """Usage and cost of one or more output directories (as ``batchgen report``)."""
    paths = [outputs] if isinstance(outputs, str | Path) else list(outputs)
    return report([Path(p) for p in paths], by=by, prices=prices)


async def areport_outputs(
    outputs: str | Path | Sequence[str | Path], *, by: str = "job", prices: Any = None
) -> Report:
    """:func:`report_outputs`, without blocking the event loop."""
    return await asyncio.to_thread(report_outputs, outputs, by=by, prices=prices)


def output_status(output: str | Path) -> OutputStatus:
    """What an output directory holds: rows done, failed, remaining, tokens, the last run."""
    return read_status(Path(output))


async def aoutput_status(output: str | Path) -> OutputStatus:
    """:func:`output_status`, without blocking the event loop."""
    return await asyncio.to_thread(read_status, Path(output))


# --- helpers ---------------------------------------------------------------------------


def cancel_batches(
    output: str | Path,
    *,
    api_key: str | None = None,
    base_url: str = DEFAULT_BASE_URL,
    api_key_env: str | None = None,
) -> list[str]:
    """Cancel the Batch Mode jobs of ``output`` that are still running (as ``batchgen cancel``).

    Returns the names of the batches asked to cancel. Their rows stay recorded: the next run
    collects what each batch answered and submits the rest again. The key is ``api_key`` or
    the variable ``api_key_env`` names (by default google-genai's: ``$GOOGLE_API_KEY`` when
    set, else ``$GEMINI_API_KEY``).
    """
    from batchgen.backends.batch.backend import cancel_output

    api_key_env = api_key_env or sdk_key_env()
    given = api_key if api_key is not None else os.environ.get(api_key_env, "")
    if not given.strip():
        raise JobError(f"{output}: no API key to cancel its batches: set ${api_key_env}")
    key = checked_key(given, "api_key=" if api_key is not None else f"${api_key_env}")
    model = ModelSpec(name="", base_url=checked_base_url(base_url, "base_url"))
    chunks = run_sync(cancel_output(Path(output), model, key))
    return [c.batch_name for c in chunks if c.batch_name is not None]


def _overrides(options: dict[str, Any]) -> Overrides:
    paths = {k: Path(options.pop(k)) if options.get(k) is not None else None
             for k in ("input", "output")}  # fmt: skip
    return Overrides(paths["input"], paths["output"], options.pop("model", None),
                     options.pop("base_url", None), options.pop("tier", None))  # fmt: skip


def _table(data: Data) -> pa.Table:
    if isinstance(data, pd.DataFrame):
        table = pa.Table.from_pandas(data, preserve_index=False)
    elif isinstance(data, pa.Table):
        table = data
    elif isinstance(data, Sequence) and not isinstance(data, str | bytes):
        table = pa.Table.from_pylist(list(data))
    else:
        raise JobError(
            f"generate(data=...): give a pandas DataFrame, a pyarrow Table or a list of dicts, "
            f"not {type(data).__name__}"
        )
    if table.num_rows == 0:
        raise JobError("generate(data=...): no rows")
    return table


def _kind(data: Data) -> str:
    """What the caller passed as ``data``, as the caller would name it."""
    if isinstance(data, pd.DataFrame):
        return "DataFrame"
    return "Table" if isinstance(data, pa.Table) else "data"


def _job(
    source: Path,
    out: Path,
    prompt: str,
    schema: Mapping[str, Any],
    model: str,
    system: str | None,
    base_url: str | None,
    options: dict[str, Any],
) -> Job:
    raw: dict[str, Any] = {
        "name": options.pop("name", "generate"),
        "input": {"path": str(source), "carry": list(options.pop("carry", ()))},
        "model": {
            "name": model,
            "api_key_env": options.pop("api_key_env", None),  # None: as google-genai reads
            "tier": options.pop("tier", "standard"),
        },
        "prompt": {"user": prompt}
        | ({"system": system} if system is not None else {})
        | _media_keys(options),
        "response_schema": dict(schema),
        "output": {
            "directory": str(out),
            "explode": bool(options.pop("explode", False)),
            "dedupe": bool(options.pop("dedupe", False)),
        },
    }
    if "examples" in options:  # few-shot turns: [{"user": ..., "model": ...}, ...]
        raw["prompt"]["examples"] = [dict(e) for e in options.pop("examples")]
    if "safety_settings" in options:  # [{"category": ..., "threshold": ...}, ...]
        raw["safety_settings"] = [dict(s) for s in options.pop("safety_settings")]
    if "cache" in options:  # "auto" (the default) or "off": explicit context caching
        raw["cache"] = {"mode": options.pop("cache")}
    if base_url is not None:
        raw["model"]["base_url"] = base_url
    # relative media paths in the data are the caller's: from the working directory
    raw["media"] = {"directory": str(Path.cwd())}
    if "inline_max_mb" in options:
        raw["media"]["inline_max_mb"] = options.pop("inline_max_mb")
    for section in ("generation", "limits", "retry", "batch"):
        if section in options:
            raw[section] = dict(options.pop(section))
    return job_from_mapping(raw, "generate()", source.parent)


def _media_keys(options: dict[str, Any]) -> dict[str, Any]:
    """[prompt]'s media keys from ``media=``, ``context=`` and ``media_types=``."""
    keys: dict[str, Any] = {}
    for name in ("media", "context"):
        if name in options:
            value = options.pop(name)
            keys[name] = [value] if isinstance(value, str | Path) else list(value)
    if "context" in keys:  # the caller's files: from the working directory
        keys["context"] = [str(Path(c).resolve()) for c in keys["context"]]
    if "media_types" in options:
        keys["media_types"] = dict(options.pop("media_types"))
    return keys


def _run_options(job: Job, api_key: str | None, options: dict[str, Any]) -> RunOptions:
    options.setdefault("handle_signals", False)
    try:
        return RunOptions(api_key=resolve_api_key(job, api_key), **options)
    except TypeError as exc:
        raise JobError(f"{job.path}: {exc}") from None


def _collect(out: Path) -> pd.DataFrame:
    """The results and the failures, one frame in input order, with a status column."""
    store = OutputDir(out)
    results = store.read(RESULTS_DIR)
    failures = store.latest_failures(["row_id", "category", "message"])
    frames = []
    if results is not None:
        results = results.drop_columns(["run"])
        frame = results.to_pandas(types_mapper=pd.ArrowDtype)
        frame["status"] = pd.Series(["ok"] * len(frame), dtype=pd.ArrowDtype(pa.string()))
        frames.append(frame)
    if failures.num_rows:
        failed = pd.DataFrame({
            "row_id": failures.column("row_id").to_pylist(),
            "status": "failed",
            "error": [f"{c}: {m}" for c, m in zip(
                failures.column("category").to_pylist(), failures.column("message").to_pylist(),
                strict=True)],
        })  # fmt: skip
        frames.append(failed.astype(pd.ArrowDtype(pa.string())))
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame({"row_id": []})
    frame[_POSITION] = frame["row_id"].astype("int64")
    order = [_POSITION] + [c for c in ("candidate", "item_index") if c in frame]
    frame = frame.sort_values(order, kind="stable").reset_index(drop=True)
    del frame[_POSITION]
    if "error" not in frame:
        frame["error"] = pd.Series([None] * len(frame), dtype=pd.ArrowDtype(pa.string()))
    first = [c for c in frame.columns if c not in ("status", "error")]
    frame = frame[[first[0], *_answer_columns(first), "status", "error", *_meta(first)]]
    return frame


_META = (
    "prompt_tokens", "output_tokens", "thinking_tokens", "cached_tokens", "total_tokens",
    "model_version", "response_id", "finish_reason", "latency_ms", "attempts", "completed_at",
    "request_hash",
)  # fmt: skip


def _answer_columns(columns: list[str]) -> list[str]:
    return [c for c in columns[1:] if c not in _META]


def _meta(columns: list[str]) -> list[str]:
    return [c for c in columns if c in _META]
