"""The validating_files step of POST /v1/jobs: the per-file report made with the base model's own
tokenizer, and the dry run's estimates. Runs in the API process, so it loads no torch.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from service.errors import ApiError
from service.settings import Settings
from tuning.errors import DataError, SpecError
from tuning.estimate import estimate_job
from tuning.spec import JobSpec
from tuning.validation import validate_files


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


def dry_run(settings: Settings, spec: JobSpec, base_path: Path, report: dict[str, Any] | None) -> DryRun:
    """The report with the job's steps, tokens, time and memory; nothing is created or queued."""
    if report is None:
        return DryRun(validation=report)
    estimate = estimate_job(spec, base_path, report, flops_per_second=settings.worker_flops)
    return DryRun(
        validation=report,
        steps=estimate.steps,
        tokens=estimate.tokens,
        parameters=estimate.parameters,
        trainable_parameters=estimate.trainable_parameters,
        estimated_seconds=estimate.seconds,
        estimated_peak_memory_bytes=estimate.peak_memory_bytes,
        estimate_method=estimate.method,
    )
