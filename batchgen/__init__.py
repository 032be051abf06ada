"""batchgen: bulk structured generation with Gemini.

CSV/Parquet rows in, one ``generateContent`` call per row with a shared ``responseSchema``,
typed Parquet out. The command line (``batchgen``) is a thin shell over this API.
"""

from __future__ import annotations

__version__ = "0.1.0"

from batchgen.errors import (
    BatchgenError,
    CheckpointError,
    FatalApiError,
    InputError,
    JobError,
    TemplateError,
)
from batchgen.job import Job, Overrides, load_job
from batchgen.plan import Plan, plan_job
from batchgen.runner import RunOptions, RunSummary, run_job

__all__ = [
    "BatchgenError",
    "CheckpointError",
    "FatalApiError",
    "InputError",
    "Job",
    "JobError",
    "Overrides",
    "Plan",
    "RunOptions",
    "RunSummary",
    "TemplateError",
    "load_job",
    "plan_job",
    "run_job",
]
