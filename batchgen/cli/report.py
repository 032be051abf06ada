"""The ``report``, ``estimate`` and ``prices`` commands: parse, call the library, print
(worded by :mod:`batchgen.cli.render`).

Registered on the main group in :mod:`batchgen.cli` (``main.add_command(report)``,
``main.add_command(estimate)``, ``main.add_command(prices)``), whose ``invoke`` turns a
BatchgenError into one line on stderr and its exit code.
"""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path

import click

from batchgen.cli.common import api_target, job_options, tier_option, today, warn_lifecycle
from batchgen.job.spec import Job, Overrides, load_job
from batchgen.pricing.file import load_prices

_PATH = click.Path(path_type=Path)


@click.command("report")
@click.argument("outputs", nargs=-1, required=True, type=_PATH)
@click.option(
    "--by",
    type=click.Choice(["job", "model", "day", "run", "finish_reason"]),
    default="job",
    show_default=True,
    help="Group the totals by this.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "csv", "json", "markdown"]),
    default="table",
    show_default=True,
)
@click.option("--prices", type=_PATH, help="A price file (TOML) that overrides or adds models.")
@click.option("--plot", type=_PATH, help="Also save a PNG of cost per day and tokens per run.")
def report(
    outputs: tuple[Path, ...], by: str, fmt: str, prices: Path | None, plot: Path | None
) -> None:
    """Requests, rows, tokens and cost of one or more OUTPUT directories.

    Every call that returned usage is counted and priced, retries and failed answers too; a
    model without a price is shown as unpriced, never as 0.
    """
    from batchgen.cli.render import format_report, plot_report
    from batchgen.reports.report import report as build_report

    rep = build_report(outputs, by=by, prices=load_prices(prices))
    for warning in rep.warnings:
        click.echo(f"warning: {warning}", err=True)
    click.echo(format_report(rep, fmt))
    if plot is not None:
        click.echo(f"plot saved to {plot_report(rep, plot)}", err=True)


@click.command("estimate")
@job_options
@tier_option
@click.option(
    "--sample",
    default=200,
    show_default=True,
    type=click.IntRange(min=1),
    help="Count the prompts of N rows spread over the input, and scale.",
)
@click.option("--all", "all_rows", is_flag=True, help="Count the prompts of every row.")
@click.option("--offline", is_flag=True, help="No API: about 4 characters a token (rough).")
@click.option("--emulator", is_flag=True, help="Count with the built-in emulator (offline).")
@click.option("--prices", type=_PATH, help="A price file (TOML) that overrides or adds models.")
@click.option(
    "--history",
    type=_PATH,
    help="An earlier output of this job to take output sizes from (default: the job's output).",
)
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
def estimate(
    job_file: Path,
    input_path: Path | None,
    output: Path | None,
    model: str | None,
    base_url: str | None,
    tier: str | None,
    sample: int,
    all_rows: bool,
    offline: bool,
    emulator: bool,
    prices: Path | None,
    history: Path | None,
    fmt: str,
) -> None:
    """Estimate JOB_FILE's tokens, cost and run time before running it."""
    from batchgen.cli.render import format_estimate
    from batchgen.reports.estimate import Estimate, estimate_job

    job = load_job(job_file, Overrides(input_path, output, model, base_url, tier))
    table = load_prices(prices)
    warn_lifecycle(job.model.name, table)
    rows = None if all_rows else sample
    day = today()

    def count(job: Job, key: str = "") -> Estimate:
        return estimate_job(
            job, api_key=key, sample=rows, offline=offline, prices=table, history=history, at=day
        )

    if offline:
        result = count(job)
    else:
        with api_target(job, emulator, "use --offline or --emulator") as (target, key):
            result = count(target, key)
    click.echo(format_estimate(result, fmt))


@click.command("prices")
@click.option("--model", help="Only this model (a dated version finds its model).")
@click.option(
    "--at",
    "day",
    type=click.DateTime(formats=["%Y-%m-%d"]),
    help="Only the prices in force on this UTC day (YYYY-MM-DD), and the status then.",
)
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
@click.option("--prices", type=_PATH, help="A price file (TOML) that overrides or adds models.")
def prices(model: str | None, day: datetime | None, fmt: str, prices: Path | None) -> None:
    """The price table: each model's dated prices per tier (USD per 1M tokens), and status."""
    from batchgen.cli.render import format_prices
    from batchgen.reports.price_list import price_rows

    table = load_prices(prices)
    at: date | None = day.date() if day is not None else None
    rows = price_rows(table, model, at, today())
    click.echo(format_prices(rows, table, fmt))
