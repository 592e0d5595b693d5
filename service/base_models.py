"""Which base model a job builds on: a catalogue model, or a finished job's model (chains of transfer).

`resolve_base` returns the spec as it will be stored (EWC's Fisher file defaults to the source
job's training file) and the directory whose config.json the model checks read. A job's model has
its root base model's architecture and tokenizer (fine-tuning changes weights, not shapes), so the
root's directory serves the checks; the worker exports the job's model itself (worker/job_models.py).
"""

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.models import MAX_JOB_CHAIN, Job, JobStatus, is_job_id
from core.settings import Settings
from service.crud import jobs as crud
from service.errors import ApiError
from tuning.errors import ModelNotFound
from tuning.models import resolve_base_model
from tuning.spec import MERGEABLE_METHODS, JobSpec


@dataclass(frozen=True)
class JobModel:
    """A succeeded job whose model can be a base model."""

    job_id: str
    root_base_model: str  # the catalogue model at the bottom of the chain
    task: str
    finished_at: datetime | None = None


def resolve_base(session: Session, owner_id: str, spec: JobSpec, settings: Settings) -> tuple[JobSpec, Path]:
    if is_job_id(spec.base_model):
        source = _source_job(session, owner_id, spec)
        base_path = _catalogue_path(root_base_model(session, source), settings)
        spec = _with_default_fisher_file(spec, source)
    else:
        base_path = _catalogue_path(spec.base_model, settings)
    if spec.regularizers.ewc is not None and spec.regularizers.ewc.fisher_file is None:
        raise ApiError(
            "regularizers.ewc.fisher_file: give the source-task file the Fisher information is estimated "
            "on (it defaults to the source job's training file only when base_model is a finished job)",
            param="regularizers.ewc.fisher_file",
            code="missing_fisher_file",
            status_code=422,
        )
    return spec, base_path


def job_models(session: Session, owner_id: str) -> list[JobModel]:
    """The owner's succeeded jobs whose model can be a base model, oldest first."""
    jobs = session.scalars(
        select(Job)
        .where(Job.owner_id == owner_id, Job.status == JobStatus.SUCCEEDED)
        .where(Job.method.in_(sorted(MERGEABLE_METHODS)))
        .order_by(Job.created_at)
    ).all()
    by_id = {job.id: job for job in jobs}
    found = []
    for job in jobs:
        root = _root_among(by_id, job)
        if root is not None:
            found.append(JobModel(job.id, root, JobSpec.model_validate(job.spec).task, job.finished_at))
    return found


def root_base_model(session: Session, job: Job) -> str:
    """The catalogue model at the bottom of `job`'s chain of job-on-job bases."""
    for _ in range(MAX_JOB_CHAIN):
        if not is_job_id(job.base_model):
            return job.base_model
        below = session.get(Job, job.base_model)
        if below is None:
            break
        job = below
    raise ApiError(
        "base_model: the job's chain of base models is broken", param="base_model", code="invalid_base_model"
    )


def _root_among(jobs: dict[str, Job], job: Job) -> str | None:
    """`root_base_model` within already-loaded jobs; None when a link is missing."""
    for _ in range(MAX_JOB_CHAIN):
        if not is_job_id(job.base_model):
            return job.base_model
        below = jobs.get(job.base_model)
        if below is None:
            return None
        job = below
    return None


def _source_job(session: Session, owner_id: str, spec: JobSpec) -> Job:
    """The owner's job named by base_model, if its model can be fine-tuned further for this task."""
    source = crud.get_job(session, owner_id=owner_id, job_id=spec.base_model)
    if source is None:
        raise ApiError(
            f"base_model: no job with id {spec.base_model!r}",
            param="base_model",
            code="model_not_found",
            status_code=404,
        )
    if source.status != JobStatus.SUCCEEDED:
        raise _invalid_base(
            f"job {source.id!r} is {source.status}; only a succeeded job's model can be a base"
        )
    if source.method not in MERGEABLE_METHODS:
        raise _invalid_base(
            f"job {source.id!r} used method {source.method!r}, whose result is not a plain model (it needs "
            f"its frozen base at inference); methods that are: {', '.join(sorted(MERGEABLE_METHODS))}"
        )
    source_task = JobSpec.model_validate(source.spec).task
    if source_task != spec.task:
        raise _invalid_base(
            f"job {source.id!r} trained a {source_task} model; a {spec.task} job needs one of its own kind"
        )
    return source


def _invalid_base(message: str) -> ApiError:
    return ApiError(f"base_model: {message}", param="base_model", code="invalid_base_model", status_code=422)


def _catalogue_path(name: str, settings: Settings) -> Path:
    try:
        return resolve_base_model(name, settings.model_dirs)
    except ModelNotFound as error:
        raise ApiError(error.message, param="base_model", code="model_not_found") from None


def _with_default_fisher_file(spec: JobSpec, source: Job) -> JobSpec:
    """EWC protects what the source job learned: by default, on the data it learned from."""
    ewc = spec.regularizers.ewc
    if ewc is None or ewc.fisher_file is not None:
        return spec
    regularizers = spec.regularizers.model_copy(
        update={"ewc": ewc.model_copy(update={"fisher_file": source.training_file_id})}
    )
    return spec.model_copy(update={"regularizers": regularizers})
