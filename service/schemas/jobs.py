"""Response bodies of /v1/jobs: a job, its events, its artifacts, and what a dry run answers.

The request body is `tuning.spec.JobRequest`: the job spec is the single source of truth.
"""

from typing import Any, Literal

from pydantic import BaseModel, Field

from core.models import JobStatus
from tuning.spec import JobSpec, Method


class JobError(BaseModel):
    code: str
    message: str
    param: str | None


class ArtifactObject(BaseModel):
    object: Literal["fine_tuning.job.artifact"] = "fine_tuning.job.artifact"
    name: str
    bytes: int
    sha256: str
    created_at: int
    url: str = Field(description="Where to download this file, relative to the server root.")


class ArtifactList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ArtifactObject]
    archive_url: str = Field(description="The whole artifact as one .tar.gz, relative to the server root.")


class JobDeleted(BaseModel):
    id: str
    object: Literal["fine_tuning.job"] = "fine_tuning.job"
    deleted: bool


class JobObject(BaseModel):
    id: str
    object: Literal["fine_tuning.job"] = "fine_tuning.job"
    status: JobStatus
    base_model: str
    method: Method
    training_file: str
    validation_file: str | None
    spec: JobSpec = Field(description="The job spec exactly as accepted.")
    metadata: dict[str, str]
    created_at: int
    started_at: int | None
    finished_at: int | None
    estimated_finish: int | None = Field(
        None,
        description="While running: when the last training step is expected (unix seconds), from the rate "
        "of the steps so far; null before the first logging step and once the job is no longer running.",
    )
    examples_seen: int = Field(description="Training examples seen so far, updated at each logging step.")
    trained_tokens: int = Field(
        description="Training tokens so far (padding excluded), at each logging step."
    )
    progress: float = Field(ge=0.0, le=1.0, description="Steps done / total steps, at each logging step.")
    metrics: dict[str, Any] = Field(description="The latest training and evaluation metrics.")
    validation: dict[str, Any] | None = Field(
        None, description="The validating_files report: per file, examples, token counts and what was found."
    )
    error: JobError | None
    cancel_requested: bool
    pause_requested: bool = Field(
        description="A pause was asked of the running job; it becomes paused at its next step boundary."
    )
    artifacts: list[ArtifactObject] = Field(description="The published files, once the job succeeded.")
    webhook_url: str | None = Field(None, description="Where this job's own webhook goes when it ends.")


class JobList(BaseModel):
    object: Literal["list"] = "list"
    data: list[JobObject]
    has_more: bool


class JobEventObject(BaseModel):
    id: int
    object: Literal["fine_tuning.job.event"] = "fine_tuning.job.event"
    created_at: int
    level: str
    type: str = Field(description="message | metrics | eval | status")
    message: str
    data: dict[str, Any]


class JobEventList(BaseModel):
    object: Literal["list"] = "list"
    data: list[JobEventObject]
    has_more: bool


class DryRun(BaseModel):
    """What a dry run answers: the validation report, and what the job would cost."""

    object: str = "fine_tuning.job.dry_run"
    validation: dict[str, Any] | None
    steps: int | None = Field(None, description="Optimizer steps (at most: early stopping can end sooner).")
    tokens: int | None = Field(None, description="Training tokens over all epochs, after truncation.")
    parameters: int | None = Field(None, description="The base model's parameter count.")
    trainable_parameters: int | None = Field(
        None, description="Parameters the job trains, a new task head included (estimated)."
    )
    estimated_seconds: float | None = Field(None, description="Training and evaluation time on one worker.")
    estimated_peak_memory_bytes: int | None = Field(
        None,
        description="The job process's peak: on a CPU worker its resident memory (libraries included), "
        "on CUDA its tensors: weights, gradients, optimizer state, activations.",
    )
    estimated_peak_memory_parts: dict[str, int] | None = Field(
        None, description="What the peak is made of, in bytes (baseline, weights, activations, ...)."
    )
    worker_memory_bytes: int | None = Field(
        None, description="Memory of the worker class the job would be queued for (null: not configured)."
    )
    fits_worker: bool | None = Field(
        None,
        description="Whether the estimated peak fits worker_memory_bytes; false: POST without dry_run "
        "answers 422 (code job_exceeds_worker_memory). null: not configured.",
    )
    estimate_method: str | None = Field(None, description="How these figures were estimated.")
    worker_figures_source: Literal["settings", "published", "defaults"] | None = Field(
        None,
        description="Where the worker's speed and baseline memory the estimate assumes come from: "
        "'settings' (an operator's DELTATUNE_WORKER_* variables, all or some), 'published' (measured by "
        "the queue's slowest worker seen recently), 'defaults' (one build machine's; no worker of the "
        "queue published any). estimate_method names the worker or the variables.",
    )
    hyperparameters: dict[str, Any] | None = Field(
        None,
        description='The hyperparameters the job would train with: "auto" learning_rate and epochs as '
        "the numbers training would choose (and head_learning_rate, the new head's rate under auto; "
        'head.pooling, "first" or "mean", where the head\'s pooling was "auto").',
    )
    auto_reasons: dict[str, str] | None = Field(
        None, description='Why "auto" chose each value it chose, by hyperparameter (and head.pooling).'
    )
