"""batchgen: bulk structured generation with Gemini.

CSV/Parquet rows in, one ``generateContent`` call per row with a shared response schema,
typed Parquet out. The command line (``batchgen``) is a thin shell over this API.

Names are imported on first use, so ``import batchgen`` (and the command's start-up, during
which a Ctrl+C must already be handled cleanly) stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from batchgen._version import __version__

if TYPE_CHECKING:
    from batchgen.api import (
        aestimate_file,
        agenerate,
        aoutput_status,
        areport_outputs,
        arun_file,
        cancel_batches,
        estimate_file,
        generate,
        output_status,
        report_outputs,
        run_file,
    )
    from batchgen.errors import (
        BatchgenError,
        BatchPendingError,
        BudgetReachedError,
        CheckpointError,
        FatalApiError,
        InputError,
        InternalError,
        JobError,
        QuotaExhaustedError,
        RunStoppedError,
        TemplateError,
    )
    from batchgen.job.spec import Job, Overrides, load_job
    from batchgen.plan import Plan, plan_job
    from batchgen.run.runner import RunOptions, RunSummary, arun_job, run_job

_WHERE = {
    "cancel_batches": "api",
    "BatchPendingError": "errors",
    "BudgetReachedError": "errors",
    "aestimate_file": "api",
    "agenerate": "api",
    "aoutput_status": "api",
    "areport_outputs": "api",
    "arun_file": "api",
    "estimate_file": "api",
    "generate": "api",
    "output_status": "api",
    "report_outputs": "api",
    "run_file": "api",
    "BatchgenError": "errors",
    "CheckpointError": "errors",
    "FatalApiError": "errors",
    "InputError": "errors",
    "InternalError": "errors",
    "JobError": "errors",
    "QuotaExhaustedError": "errors",
    "RunStoppedError": "errors",
    "TemplateError": "errors",
    "Job": "job.spec",
    "Overrides": "job.spec",
    "load_job": "job.spec",
    "Plan": "plan",
    "plan_job": "plan",
    "RunOptions": "run.runner",
    "RunSummary": "run.runner",
    "arun_job": "run.runner",
    "run_job": "run.runner",
}

__all__ = [
    "__version__",
    "cancel_batches",
    "BatchPendingError",
    "BudgetReachedError",
    "aestimate_file",
    "agenerate",
    "aoutput_status",
    "areport_outputs",
    "arun_file",
    "estimate_file",
    "generate",
    "output_status",
    "report_outputs",
    "run_file",
    "BatchgenError",
    "CheckpointError",
    "FatalApiError",
    "InputError",
    "InternalError",
    "JobError",
    "QuotaExhaustedError",
    "RunStoppedError",
    "TemplateError",
    "Job",
    "Overrides",
    "load_job",
    "Plan",
    "plan_job",
    "RunOptions",
    "RunSummary",
    "arun_job",
    "run_job",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'batchgen' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"batchgen.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
