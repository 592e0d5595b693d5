"""The validating_files step of POST /v1/jobs: the per-file report made with the base model's own
tokenizer, and the dry run's estimates. Runs in the API process, so it loads no torch.
"""

import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from core.settings import Settings
from service.crud import jobs as job_crud
from service.errors import ApiError
from tuning.errors import DataError, SpecError
from tuning.estimate import estimate_job
from tuning.spec import JobSpec
from tuning.validation import validate_files

# Finished jobs whose measured/estimated time ratio calibrates a dry run's time.
CALIBRATION_JOBS = 20


@dataclass(frozen=True)
class JobFiles:
    """The stored blobs of a job's files, each checked usable."""

    training: Path
    validation: Path | None
    fisher: Path | None


class DryRun(BaseModel):
    """What a dry run answers: the validation report, and what the job would cost."""

    object: str = "fine_tuning.job.dry_run"
    validation: dict[str, Any] | None
    steps: int | None = Field(None, description="Optimizer steps (at most: early stopping can end sooner).")
    tokens: int | None = Field(None, description="Training tokens over all epochs, after truncation.")
    parameters: int | None = Field(None, description="The base model's parameter count.")
    trainable_parameters: int | None = Field(None, description="Parameters the method trains (estimated).")
    estimated_seconds: float | None = Field(None, description="Training and evaluation time on one worker.")
    estimated_peak_memory_bytes: int | None = Field(
        None, description="Weights, optimizer state, activations."
    )
    estimate_method: str | None = Field(None, description="How these figures were estimated.")


def validate_job_files(
    settings: Settings, spec: JobSpec, base_path: Path, files: JobFiles
) -> dict[str, Any] | None:
    """The report stored with the job; ApiError (422) naming the file and line when one cannot train it."""
    paths = {"training_file": files.training}
    if files.validation is not None:
        paths["validation_file"] = files.validation
    try:
        return validate_files(spec, base_path, paths)
    except (DataError, SpecError) as error:
        raise ApiError(error.message, param=error.param, code=error.code, status_code=422) from None


def with_estimate(
    settings: Settings, spec: JobSpec, base_path: Path, report: dict[str, Any] | None
) -> dict[str, Any] | None:
    """The report as a job stores it: with the uncalibrated estimate, which later dry runs calibrate on."""
    if report is None:
        return None
    estimate = estimate_job(spec, base_path, report, flops_per_second=settings.worker_flops)
    return {
        **report,
        "estimate": {"steps": estimate.steps, "tokens": estimate.tokens, "seconds": estimate.seconds},
    }


def dry_run(
    session: Session, settings: Settings, spec: JobSpec, base_path: Path, report: dict[str, Any] | None
) -> DryRun:
    """The report with the job's steps, tokens, time and memory; nothing is created or queued.

    The FLOP count alone misses a worker's overheads (evaluation batches, the optimizer, Python), so
    the time is scaled by the median measured/estimated ratio of this queue's last finished jobs.
    """
    if report is None:
        return DryRun(validation=report)
    estimate = estimate_job(spec, base_path, report, flops_per_second=settings.worker_flops)
    ratios = job_crud.estimate_ratios(session, queue=settings.job_queue, limit=CALIBRATION_JOBS)
    seconds, method = estimate.seconds, estimate.method
    if ratios:
        ratio = statistics.median(ratios)
        seconds *= ratio
        method += (
            f"\n - calibration: × {ratio:.2f}, the median of measured train_seconds / estimated seconds "
            f"over the last {len(ratios)} succeeded jobs on queue {settings.job_queue!r}"
        )
    return DryRun(
        validation=report,
        steps=estimate.steps,
        tokens=estimate.tokens,
        parameters=estimate.parameters,
        trainable_parameters=estimate.trainable_parameters,
        estimated_seconds=seconds,
        estimated_peak_memory_bytes=estimate.peak_memory_bytes,
        estimate_method=method,
    )
