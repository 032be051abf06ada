"""The command line: parse, call the library, print. The only module that imports click.

Exit codes: 0 all rows done; 1 some rows failed (see OUTPUT/errors/); 2 usage, job or input
error; 3 the API refused the run (bad key, unknown model); 130 interrupted.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import click

from batchgen import __version__
from batchgen.errors import BatchgenError, JobError
from batchgen.job import Job, Overrides, load_job
from batchgen.runner import Plan, RunOptions, RunSummary, plan_job, run_job

EMULATOR_KEY = "emulator-key"


class _Group(click.Group):
    """Turns a BatchgenError into one line on stderr and its exit code; no traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BatchgenError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="batchgen")
def main() -> None:
    """Bulk structured generation with Gemini: CSV/Parquet rows in, typed Parquet out."""


def _job_options(f: Any) -> Any:
    for option in reversed(
        [
            click.argument("job_file", type=click.Path(path_type=Path)),
            click.option(
                "--input",
                "input_path",
                type=click.Path(path_type=Path),
                help="Input file instead of the job's input.path.",
            ),
            click.option(
                "--output",
                type=click.Path(path_type=Path),
                help="Output directory instead of the job's output.directory.",
            ),
            click.option("--model", help="Model name instead of the job's model.name."),
            click.option("--base-url", help="API base URL (e.g. a proxy) instead of the job's."),
        ]
    ):
        f = option(f)
    return f


def _load(
    job_file: Path,
    input_path: Path | None,
    output: Path | None,
    model: str | None,
    base_url: str | None,
) -> Job:
    return load_job(job_file, Overrides(input_path, output, model, base_url))


@main.command()
@_job_options
@click.option("--limit", type=click.IntRange(min=1), help="Only the first N input rows.")
@click.option("--emulator", is_flag=True, help="Run against the built-in emulator (offline).")
def run(
    job_file: Path,
    input_path: Path | None,
    output: Path | None,
    model: str | None,
    base_url: str | None,
    limit: int | None,
    emulator: bool,
) -> None:
    """Run JOB_FILE: call the model for every input row not yet in the output."""
    job = _load(job_file, input_path, output, model, base_url)
    if emulator:
        from batchgen.emulator import EmulatorThread

        with EmulatorThread() as server:
            job = replace(job, model=replace(job.model, base_url=server.base_url))
            key = os.environ.get(job.model.api_key_env) or EMULATOR_KEY
            summary = run_job(job, RunOptions(api_key=key, limit=limit))
    else:
        summary = run_job(job, RunOptions(api_key=_api_key(job), limit=limit))
    click.echo(_describe(summary))
    sys.exit(summary.exit_code)


def _api_key(job: Job) -> str:
    key = os.environ.get(job.model.api_key_env, "").strip()
    if not key:
        raise JobError(
            f"{job.path}: no API key: set ${job.model.api_key_env} (model.api_key_env), "
            "or use --emulator to run offline"
        )
    return key


def _describe(s: RunSummary) -> str:
    lines = [
        f"{s.rows_done} rows done, {s.rows_failed} failed, {s.rows_skipped} already done "
        f"→ {s.output} ({s.output_rows} result rows, {s.parts} part files, {s.seconds:.1f} s)",
        f"{s.requests} requests; tokens: {s.usage['prompt']} prompt, {s.usage['output']} output, "
        f"{s.usage['thinking']} thinking, {s.usage['total']} total",
    ]
    if s.failures:
        by = ", ".join(f"{n} {c}" for c, n in s.failures.most_common())
        lines.append(f"failed rows ({by}) are recorded in {s.output / 'errors'}")
    return "\n".join(lines)


@main.command()
@_job_options
@click.option("--show-request", is_flag=True, help="Print the request for the first input row.")
def validate(
    job_file: Path,
    input_path: Path | None,
    output: Path | None,
    model: str | None,
    base_url: str | None,
    show_request: bool,
) -> None:
    """Check JOB_FILE against its input without any network call."""
    job = _load(job_file, input_path, output, model, base_url)
    plan = plan_job(job)
    click.echo(f"ok: {job.path}")
    click.echo(
        f"  input   {job.input.path} ({job.input.format}; reads {', '.join(plan.reader.columns)})"
    )
    click.echo(
        f"  model   {job.model.name} at {job.model.base_url} (key from ${job.model.api_key_env})"
    )
    click.echo(f"  output  {job.output.directory}")
    for f in plan.layout.schema:
        click.echo(f"    {f.name}: {f.type}{'' if f.nullable else ' not null'}")
    if show_request:
        click.echo(_first_request(plan))


def _first_request(plan: Plan) -> str:
    body = json.dumps(json.loads(plan.first_request()), indent=2, ensure_ascii=False)
    return (
        f"POST {plan.job.model.url}\nx-goog-api-key: ${plan.job.model.api_key_env}\n"
        f"Content-Type: application/json\n\n{body}"
    )


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8089, show_default=True, type=int)
@click.option("--latency-ms", default=0.0, show_default=True, help="Added to every answer.")
@click.option("--rpm", type=int, help="Answer 429 above this many requests per minute.")
@click.option("--tpm", type=int, help="Answer 429 above this many input tokens per minute.")
@click.option("--api-key", "api_keys", multiple=True, help="Accept only these keys (repeatable).")
@click.option(
    "--fault",
    "faults",
    multiple=True,
    metavar="NAME=RATE",
    help="Inject a fault with this probability, e.g. 503=0.05 (repeatable).",
)
def emulator(
    host: str,
    port: int,
    latency_ms: float,
    rpm: int | None,
    tpm: int | None,
    api_keys: tuple[str, ...],
    faults: tuple[str, ...],
) -> None:
    """Serve the offline Gemini emulator (generateContent, countTokens)."""
    from batchgen.emulator import EmulatorConfig, serve

    rates: dict[str, float] = {}
    for spec in faults:
        name, _, rate = spec.partition("=")
        try:
            rates[name] = float(rate)
        except ValueError:
            raise JobError(f"--fault {spec}: the rate must be a number such as 0.05") from None
    try:
        config = EmulatorConfig(
            api_keys=frozenset(api_keys) or None,
            latency_ms=latency_ms,
            rpm_limit=rpm,
            tpm_limit=tpm,
            fault_rates=rates,
        )
    except ValueError as exc:
        raise JobError(f"emulator: {exc}") from None
    serve(config, host=host, port=port)
