"""What the commands that take a job share: its options, where to send it, and with which key."""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator
from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import Any

import click
import msgspec

from batchgen.errors import BatchgenWarning
from batchgen.gemini.proxy import proxy_for
from batchgen.job.spec import TIERS, Job, key_env_warning, resolve_api_key
from batchgen.pricing.file import load_prices
from batchgen.pricing.table import PriceTable, lifecycle_warning, utc_today
from batchgen.redact import cleartext_warning

EMULATOR_KEY = "emulator-key"  # what --emulator sends when the key's variable is unset


@contextlib.contextmanager
def api_target(job: Job, emulator: bool, alternative: str) -> Iterator[tuple[Job, str]]:
    """The job and its key: the built-in emulator on 127.0.0.1, or the API with the key from
    the environment variable the job names (a JobError saying ``alternative`` when unset)."""
    if not emulator:
        with notes_as_lines():
            key = resolve_api_key(job, alternative=f"or {alternative}")
        proxy_for(job.model.base_url)  # a proxy variable that cannot be used: before the run
        for warning in (key_env_warning(job), cleartext_warning(job.model.base_url)):
            if warning:
                click.echo(f"warning: {warning}", err=True)
        yield job, key
        return
    from batchgen.emulator import EmulatorThread

    with notes_as_lines():  # a key set for the emulator must be sendable too
        given = os.environ.get(job.model.api_key_env, "").strip()
        key = resolve_api_key(job) if given else EMULATOR_KEY
    with EmulatorThread() as server:
        local = replace(job, model=msgspec.structs.replace(job.model, base_url=server.base_url))
        yield local, key


@contextlib.contextmanager
def notes_as_lines() -> Iterator[None]:
    """The library's BatchgenWarnings raised inside, each as one ``warning:`` line on stderr
    (not Python's two-line warning format)."""

    def show(message: Warning | str, category: type[Warning], *rest: Any, **kw: Any) -> None:
        if issubclass(category, BatchgenWarning):
            click.echo(f"warning: {message}", err=True)
        else:
            shown(message, category, *rest, **kw)

    with warnings.catch_warnings():
        shown = warnings.showwarning
        warnings.simplefilter("always", BatchgenWarning)
        warnings.showwarning = show
        yield


def job_options(f: Any) -> Any:
    """JOB_FILE, and --input, --output, --model, --base-url to override the job file."""
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


def tier_option(f: Any) -> Any:
    """--tier, replacing the job's model.tier."""
    return click.option(
        "--tier",
        type=click.Choice(TIERS),
        help="Service tier instead of the job's model.tier (flex: half price, slower).",
    )(f)


def today() -> date:
    """Today in UTC; a test sets the day with ``CliRunner().invoke(main, args, obj={"today": d})``
    (click hands ``obj`` to the group's context), so date-dependent output needs no sleeping."""
    ctx = click.get_current_context(silent=True)
    obj = ctx.find_root().obj if ctx is not None else None
    given = obj.get("today") if isinstance(obj, dict) else None
    return given if isinstance(given, date) else utc_today()


def warn_lifecycle(model: str, prices: PriceTable | None = None) -> None:
    """Print ``warning: ...`` when the job's model is retired or retires within 30 days."""
    warning = lifecycle_warning(model, today(), prices or load_prices())
    if warning is not None:
        click.echo(f"warning: {warning}", err=True)
