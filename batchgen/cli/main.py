"""The command line: parse, call the library, print. The only module that imports click.

Exit codes (README, "Exit codes"): 0 every row done; 1 some rows failed (see OUTPUT/errors/);
2 usage, job, input or output error; 3 the API refused the run (bad key, unknown model);
4 stopped before the end (signal, API unreachable, rows left), rerun to resume; 5 a per-day
quota is used up, rerun after it resets; 6 --max-cost reached; 75 --no-wait: batches are still
running, a later run collects them; 70 a bug in batchgen stopped the run (what was answered is
saved).
"""

from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from batchgen._version import __version__
from batchgen.cli.common import (
    api_target,
    job_options,
    notes_as_lines,
    tier_option,
    warn_lifecycle,
)
from batchgen.cli.render import repeats_line
from batchgen.cli.report import estimate, prices, report
from batchgen.errors import (
    BatchgenError,
    InputError,
    InternalError,
    JobError,
    RunStoppedError,
    one_line,
)
from batchgen.gemini.proxy import proxy_for
from batchgen.job.location import store_url
from batchgen.job.spec import DEFAULT_BASE_URL, Job, Overrides, load_job
from batchgen.plan import Plan, plan_job
from batchgen.pricing.file import load_prices
from batchgen.redact import redact_url
from batchgen.reports.repeats import count_repeats
from batchgen.run.runner import RunOptions, RunSummary, run_job

if TYPE_CHECKING:
    from batchgen.reports.status import OutputStatus

_ASKED = "batchgen.model"  # ctx.meta key: the model the run asked for, for its summary


class _Group(click.Group):
    """Turns a BatchgenError into one line on stderr and its exit code; no traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BatchgenError as exc:
            if isinstance(exc.summary, RunSummary):
                click.echo(_describe(exc.summary, ctx.meta.get(_ASKED)))
            click.echo(f"error: {one_line(exc.worded('cli'))}", err=True)  # one line, CLI words
            sys.exit(exc.exit_code)
        except (click.exceptions.Exit, click.ClickException, click.exceptions.Abort):
            raise  # --help, --print-schema, a usage error: click's own exit and message
        except KeyboardInterrupt:  # a caller without batchgen's own entry point's handlers
            click.echo("error: interrupted; nothing more was sent: rerun to resume", err=True)
            sys.exit(RunStoppedError.exit_code)
        except Exception as exc:  # a bug: one line, unless asked for the traceback
            if os.environ.get("BATCHGEN_DEBUG"):
                raise
            click.echo(
                f"error: internal error: {type(exc).__name__}: {one_line(exc)} (a bug in "
                "batchgen: please report it; BATCHGEN_DEBUG=1 shows the traceback)",
                err=True,
            )
            sys.exit(InternalError.exit_code)


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="batchgen")
def main() -> None:
    """Bulk structured generation with Gemini: CSV/Parquet rows in, typed Parquet out."""


def _load(
    job_file: Path,
    input_path: Path | None,
    output: Path | None,
    model: str | None,
    base_url: str | None,
    tier: str | None = None,
) -> Job:
    return load_job(job_file, Overrides(input_path, output, model, base_url, tier))


def _duration(text: str | None) -> float | None:
    """'55m', '1h30m', '90s' or plain seconds."""
    if text is None:
        return None
    match = re.fullmatch(
        r"\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s?)?\s*", text
    )
    if not match or not any(match.groups()):
        raise JobError(f"--time-budget {text!r}: give a duration such as 55m, 1h30m or 90s")
    hours, minutes, seconds = (float(g) if g else 0.0 for g in match.groups())
    total = hours * 3600 + minutes * 60 + seconds
    if total <= 0:
        raise JobError(f"--time-budget {text!r}: must be more than 0")
    return total


@main.command()
@job_options
@tier_option
@click.option("--limit", type=click.IntRange(min=1), help="Only the first N input rows.")
@click.option("--emulator", is_flag=True, help="Run against the built-in emulator (offline).")
@click.option("--fresh", is_flag=True, help="Move the existing output aside and start over.")
@click.option("--skip-failed", is_flag=True, help="Do not retry rows that failed in earlier runs.")
@click.option(
    "--grace",
    default=30.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Seconds the calls in flight may take after SIGINT/SIGTERM or at the time budget.",
)
@click.option("--max-cost", type=click.FloatRange(min=0), help="Stop once this run spent USD.")
@click.option("--time-budget", metavar="DURATION", help="Stop cleanly within e.g. 55m.")
@click.option("--prices", type=click.Path(path_type=Path), help="Price table overriding/adding.")
@click.option(
    "--no-wait",
    is_flag=True,
    help="Tier batch: submit the batches and exit 75 (pending); a later run collects them.",
)
@click.option("--quiet", is_flag=True, help="No progress output.")
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text")
@click.option(
    "--engine",
    type=click.Choice(["local", "ray"]),
    default="local",
    show_default=True,
    help="ray: the calls made across a Ray cluster under one quota (pip install 'batchgen[ray]').",
)
@click.option("--ray-address", metavar="ADDR", help="The Ray cluster to join (default: local).")
@click.option(
    "--progress-every",
    default=60.0,
    show_default=True,
    type=click.FloatRange(min=0.1),
    help="Seconds between progress lines when not on a terminal.",
)
def run(
    job_file: Path,
    input_path: Path | None,
    output: Path | None,
    model: str | None,
    base_url: str | None,
    tier: str | None,
    limit: int | None,
    emulator: bool,
    fresh: bool,
    skip_failed: bool,
    grace: float,
    max_cost: float | None,
    time_budget: str | None,
    prices: Path | None,
    no_wait: bool,
    quiet: bool,
    log_format: str,
    engine: str,
    ray_address: str | None,
    progress_every: float,
) -> None:
    """Run JOB_FILE: call the model for every input row not yet in the output."""
    from batchgen.cli.progress import choose

    job = _load(job_file, input_path, output, model, base_url, tier)
    table = load_prices(prices)
    warn_lifecycle(job.model.name, table)
    click.get_current_context().meta[_ASKED] = job.model.name
    options = RunOptions(
        api_key="",
        limit=limit,
        fresh=fresh,
        skip_failed=skip_failed,
        grace_seconds=grace,
        prices=table,
        max_cost=max_cost,
        time_budget=_duration(time_budget),
        progress=choose(quiet, log_format, progress_every),
        wait=not no_wait,
        engine=engine,
        ray_address=ray_address,
    )
    if no_wait and job.model.tier != "batch":
        raise JobError("--no-wait: only a batch run can be left running; add --tier batch")
    with api_target(job, emulator, "use --emulator to run offline") as (target, key):
        with notes_as_lines():  # e.g. a store output's best-effort lock
            summary = run_job(target, replace(options, api_key=key))
    click.echo(_describe(summary, job.model.name))
    sys.exit(summary.exit_code)


def _describe(s: RunSummary, asked: str | None = None) -> str:
    lines = [
        f"{s.rows_done} rows done, {s.rows_failed} failed, {s.rows_skipped} skipped as done "
        f"→ {s.output} ({s.output_rows} result rows, {s.parts} part files, {s.seconds:.1f} s)",
        f"{s.requests} requests; tokens: {s.usage['prompt']} prompt, {s.usage['output']} output, "
        f"{s.usage['thinking']} thinking, {s.usage['total']} total; cost "
        + ("unpriced" if s.cost is None else f"${s.cost:.4f}"),
    ]
    if s.rows_reused:
        lines.append(f"{s.rows_reused} rows answered by an identical request's call (unpaid)")
    if s.moved_aside:
        lines.insert(0, f"the earlier output was moved to {s.moved_aside}")
    if s.folded:
        lines.insert(0, f"folded {s.folded} journal segments left by a killed run into parts")
    lines += [f"note: {n}" for n in s.notes]
    if s.rows_remaining:
        lines.append(f"{s.rows_remaining} rows remain: rerun the same command to take them")
    answered = _answered_by(s, asked)
    if answered:
        lines.append(answered)
    if s.failures:
        by = ", ".join(f"{n} {c}" for c, n in s.failures.most_common())
        lines.append(
            f"failed rows ({by}) are recorded in {s.output / 'errors'}; a rerun retries them"
        )
        for category, message in list(s.first_errors.items())[:3]:
            lines.append(f"  {category}: {message}")
    return "\n".join(lines)


def _answered_by(s: RunSummary, asked: str | None) -> str:
    """Which models answered, when a modelVersion names another model than the job asked."""
    from batchgen.pricing.table import same_model

    others = [v for v in s.answered_by if not same_model(asked, v)]
    if not others:
        return ""
    names = ", ".join(f"{v} ({s.answered_by[v]} calls)" for v in others)
    return f"answered by {names}; asked {asked}"


def _print_schema(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    """--print-schema: the job file's JSON Schema, then stop (no JOB_FILE needed)."""
    if value and not ctx.resilient_parsing:
        from batchgen.job.spec import job_file_schema

        click.echo(json.dumps(job_file_schema(), indent=2))
        ctx.exit()


@main.command()
@job_options
@click.option("--show-request", is_flag=True, help="Print the request for the first input row.")
@click.option(
    "--print-schema",
    is_flag=True,
    is_eager=True,
    expose_value=False,
    callback=_print_schema,
    help="Print the JSON Schema of a job file (for editors) and exit.",
)
def validate(
    job_file: Path,
    input_path: Path | None,
    output: Path | None,
    model: str | None,
    base_url: str | None,
    show_request: bool,
) -> None:
    """Check JOB_FILE against its input (every value a run reads) without any network call."""
    job = _load(job_file, input_path, output, model, base_url)
    plan = plan_job(job)
    warn_lifecycle(job.model.name)
    rows = plan.reader.scan().rows  # every value the run reads, read as the run reads it
    if rows == 0:
        raise InputError(f"{job.input.path}: no rows (the file has only a header)")
    click.echo(f"ok: {job.path}")
    click.echo(
        f"  input   {job.input.path} ({job.input.format}; {rows:,} rows; "
        f"reads {', '.join(plan.reader.columns)})"
    )
    click.echo(
        f"  model   {job.model.name} at {redact_url(job.model.base_url)} "
        f"(key from ${job.model.api_key_env})"
    )
    proxy = proxy_for(job.model.base_url)
    click.echo(f"  proxy   {proxy.describe() if proxy else 'none: calls go direct'}")
    click.echo(f"  schema  {job.schema.describe(len(plan.layout.answer_columns))}")
    for path in job.schema.json_text_fields():
        click.echo(f"    as JSON text: {path}")
    click.echo(f"  output  {store_url(job.output.directory) or job.output.directory}")
    for f in plan.layout.schema:
        click.echo(f"    {f.name}: {f.type}{'' if f.nullable else ' not null'}")
    repeats = count_repeats(plan)
    if repeats.repeated:
        click.echo(f"  repeats {repeats_line(repeats)}")
    if job.prompt.media:
        _check_media(plan)
    if show_request:
        click.echo(_first_request(plan))


def _check_media(plan: Plan) -> None:
    """The pre-scan of every media cell: each bad one on a line of its own, then exit 2."""
    count, bad = plan.media_scan()
    context = f" and {len(plan.context)} context files" if plan.context else ""
    click.echo(
        f"  media   {count:,} sendable values in {', '.join(plan.job.prompt.media)}{context}"
    )
    if bad:
        for line in bad[:MAX_SHOWN]:
            click.echo(f"error: {line}", err=True)
        more = f" ({len(bad) - MAX_SHOWN:,} more not shown)" if len(bad) > MAX_SHOWN else ""
        raise InputError(
            f"{plan.reader.path}: {len(bad):,} media values cannot be sent{more}; a run fails "
            "those rows as input and sends nothing for them"
        )


MAX_SHOWN = 20  # bad media values listed by validate


def _first_request(plan: Plan) -> str:
    body = json.dumps(json.loads(plan.first_request()), indent=2, ensure_ascii=False)
    return (
        f"POST {redact_url(plan.job.model.url)}\nx-goog-api-key: ${plan.job.model.api_key_env}\n"
        f"Content-Type: application/json\n\n{body}"
    )


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8089, show_default=True, type=int)
@click.option("--latency-ms", default=0.0, show_default=True, help="Added to every answer.")
@click.option(
    "--latency-median-ms",
    default=0.0,
    show_default=True,
    help="Median of a lognormal delay added to every answer.",
)
@click.option(
    "--latency-sigma", default=0.0, show_default=True, help="Spread of that lognormal (log sd)."
)
@click.option("--rpm", type=int, help="Answer 429 above this many requests per minute.")
@click.option("--tpm", type=int, help="Answer 429 above this many input tokens per minute.")
@click.option("--rpd", type=int, help="Answer 429 above this many requests per day.")
@click.option(
    "--outage",
    metavar="AFTER+SECONDS",
    help="Answer every call 503 for SECONDS, starting AFTER s past the first call, e.g. 30+120.",
)
@click.option(
    "--flex-standard-share",
    default=0.0,
    show_default=True,
    type=click.FloatRange(0, 1),
    help="Share of answered Flex requests served at standard (x-gemini-service-tier).",
)
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
    latency_median_ms: float,
    latency_sigma: float,
    rpm: int | None,
    tpm: int | None,
    rpd: int | None,
    outage: str | None,
    flex_standard_share: float,
    api_keys: tuple[str, ...],
    faults: tuple[str, ...],
) -> None:
    """Serve the offline Gemini emulator (generateContent, countTokens)."""
    from batchgen.emulator import EmulatorConfig, serve

    after, seconds = _outage(outage)
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
            latency_median_ms=latency_median_ms,
            latency_sigma=latency_sigma,
            rpm_limit=rpm,
            tpm_limit=tpm,
            rpd_limit=rpd,
            outage_after_s=after,
            outage_seconds=seconds,
            fault_rates=rates,
            flex_standard_share=flex_standard_share,
        )
    except ValueError as exc:
        raise JobError(f"emulator: {exc}") from None
    serve(config, host=host, port=port)


def _outage(spec: str | None) -> tuple[float | None, float]:
    """``--outage AFTER+SECONDS`` as (after, seconds)."""
    if spec is None:
        return None, 0.0
    after, _, seconds = spec.partition("+")
    try:
        return float(after), float(seconds)
    except ValueError:
        raise JobError(f"--outage {spec}: expected AFTER+SECONDS such as 30+120") from None


@main.command()
@click.argument("output", type=click.Path(path_type=Path))
@click.option("--base-url", default=DEFAULT_BASE_URL, show_default=True, help="The API's URL.")
@click.option(
    "--api-key-env",
    help="The environment variable holding the API key "
    "(default: $GOOGLE_API_KEY when set, else $GEMINI_API_KEY, as google-genai reads it).",
)
def cancel(output: Path, base_url: str, api_key_env: str | None) -> None:
    """Cancel OUTPUT's Batch Mode jobs that are still running (tier batch).

    The next run collects what they answered and submits the other rows again.
    """
    from batchgen.api import cancel_batches

    with notes_as_lines():
        names = cancel_batches(output, base_url=base_url, api_key_env=api_key_env)
    if not names:
        click.echo(f"{output}: no running batches to cancel")
    for name in names:
        click.echo(f"cancelled {name}")


main.add_command(report)
main.add_command(estimate)
main.add_command(prices)


@main.command()
@click.argument("output", type=click.Path(path_type=Path))
def status(output: Path) -> None:
    """Show what OUTPUT holds: rows done, failed, remaining, tokens, the last run."""
    from batchgen.reports.status import output_status

    st = output_status(output)
    remaining = "unknown" if st.remaining is None else f"{st.remaining} of {st.rows_total}"
    failed = ", ".join(f"{n} {c}" for c, n in st.failed.most_common()) or "none"
    tokens = ", ".join(f"{n} {k}" for k, n in st.tokens.items()) or "none"
    shown = store_url(output) or output
    click.echo(f"{shown}{' (a run is writing it now)' if st.running else ''}")
    click.echo(f"  done       {st.rows_done} rows ({st.result_rows} result rows)")
    click.echo(f"  failed     {st.rows_failed} rows ({failed})")
    click.echo(f"  remaining  {remaining}")
    click.echo(f"  tokens     {tokens} (answers kept)")
    click.echo(f"  last run   {_describe_run(st.last_run, st)}")


def _describe_run(run: dict[str, Any] | None, st: OutputStatus) -> str:
    writer = st.writer or {}
    by = f"pid {writer.get('pid')} on {writer.get('host')}"
    if st.running and (run is None or run.get("event") == "end"):
        return f"a run ({by}) is starting"  # it holds the lock, its start is not recorded yet
    if run is None:
        return "none recorded"
    start = run.get("started_at", "?")
    if run.get("event") != "end" and st.running:
        since = str(start)[:19].replace("T", " ")
        done = f"{st.run_rows:,} rows done so far"
        return f"{run.get('run_id')} running since {since} UTC ({by}): {done}"
    if run.get("event") != "end":
        return f"{run.get('run_id')} started {start}, did not finish (killed?)"
    outcome = run.get("stopped") or ("some rows failed" if run.get("rows_failed") else "complete")
    return (
        f"{run.get('run_id')} {start} → {run.get('ended_at')}: {run.get('rows_done')} done, "
        f"{run.get('rows_failed')} failed, exit {run.get('exit_code')} ({outcome})"
    )
