"""The validating_files step of POST /v1/jobs: the per-file report made with the base model's own
tokenizer, and the dry run's estimates. Runs in the API process, so it loads no torch.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from service.settings import Settings
from tuning.spec import JobSpec


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


def validate_job_files(
    settings: Settings, spec: JobSpec, base_path: Path, files: JobFiles
) -> dict[str, Any] | None:
    """The report stored with the job; ApiError (422) naming the file and line when one cannot train it."""
    return None


def dry_run(settings: Settings, spec: JobSpec, base_path: Path, report: dict[str, Any] | None) -> DryRun:
    return DryRun(validation=report)
