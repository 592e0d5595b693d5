"""Submitting a fine-tuning job (POST /v1/jobs): every check in order, then a dry run's answer or a
queued job sent to a worker.

The order is the order in which a client learns of its mistakes: the base model, the spec against
the base's config.json, the files, from_checkpoint, then validating_files, every file read with the
base model's own tokenizer (tuning.validation, no torch: this runs in the API process). Each failed
check is an ApiError naming the field at fault; nothing is stored before all of them pass.
"""

import logging
import statistics
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from celery import Celery
from sqlalchemy.orm import Session

from core.dispatch import enqueue_job
from core.models import Job
from core.settings import Settings
from core.storage import open_storage
from service.base_models import resolve_base
from service.crud import checkpoints as checkpoint_crud
from service.crud import jobs as job_crud
from service.crud import webhooks as webhook_crud
from service.errors import ApiError, NotFound
from service.schemas.jobs import DryRun
from service.storage import uploads_dir
from service.usable_files import check_data_file
from service.validation_slots import validation_slot
from service.webhook_urls import checked_webhook_url
from service.worker_figures import EstimateWorker, estimate_worker
from tuning.compat import check_spec_for_model
from tuning.errors import DataError, SpecError
from tuning.estimate import Estimate, Worker, estimate_job
from tuning.spec import JobRequest, JobSpec
from tuning.validation import validate_files

logger = logging.getLogger(__name__)

# Finished jobs whose measured/estimated time ratio calibrates a dry run's time.
CALIBRATION_JOBS = 20


@dataclass(frozen=True)
class JobFiles:
    """The storage keys of a job's files, each checked usable."""

    training: str
    validation: str | None
    fisher: str | None


def submit_job(
    session: Session,
    settings: Settings,
    celery: Celery,
    *,
    owner_id: str,
    request: JobRequest,
    before_commit: Callable[[Job], None] | None = None,
) -> Job | DryRun:
    """The queued job (committed, then enqueued), or with `dry_run` the report and estimates only.

    `before_commit` joins the job's INSERT transaction (the idempotency key's response)."""
    webhook_url = _checked_webhook_url(session, settings, owner_id, request.webhook_url)
    spec, base_path = resolve_base(session, owner_id, request.job_spec(), settings)
    check_processes(settings, spec)
    _check_fits_model(spec, base_path)
    files = _job_files(session, owner_id, spec)
    check_from_checkpoint(session, owner_id, spec)
    # The reads so far are done: the pooled connection goes back while the files are read.
    session.commit()
    with validation_slot(
        limit=settings.validation_concurrency, wait_seconds=settings.validation_wait_seconds
    ):
        report = _validation_report(settings, spec, base_path, files)
    figures = estimate_worker(session, settings)
    if request.dry_run:
        return dry_run(session, settings, figures, spec, base_path, report)
    if report is not None:
        check_fits_worker(settings, uncalibrated_estimate(figures.worker, spec, base_path, report))
    job = job_crud.create_job(
        session,
        owner_id=owner_id,
        spec=spec,
        queue=settings.job_queue,
        validation=_with_estimate(figures.worker, spec, base_path, report),
        webhook_url=webhook_url,
        before_commit=before_commit,
    )
    _send(celery, job)
    return job


def _checked_webhook_url(session: Session, settings: Settings, owner_id: str, url: str | None) -> str | None:
    if url is None:
        return None
    checked_webhook_url(settings, url, param="webhook_url")
    if webhook_crud.get_secret(session, owner_id=owner_id) is None:
        raise ApiError(
            "webhook_url: deliveries are signed with your webhook secret, and you have none yet; "
            "create it with POST /v1/webhooks/secret (or register an endpoint with POST /v1/webhooks)",
            param="webhook_url",
            code="webhook_secret_missing",
        )
    return url


def check_processes(settings: Settings, spec: JobSpec) -> None:
    """A job asks for at most the processes the queue's workers give one job (a dry run too)."""
    offered = settings.max_processes_per_job
    if spec.resources.processes > offered:
        raise ApiError(
            f"resources.processes is {spec.resources.processes}, but the workers of queue "
            f"{settings.job_queue!r} give a job at most {offered}",
            param="resources.processes",
            code="too_many_processes",
            status_code=422,
        )


def _check_fits_model(spec: JobSpec, base_path: Path) -> None:
    try:
        check_spec_for_model(spec, base_path)
    except SpecError as error:
        raise ApiError(error.message, param=error.param, code=error.code, status_code=422) from None


def _job_files(session: Session, owner_id: str, spec: JobSpec) -> JobFiles:
    def optional(file_id: str | None, param: str) -> str | None:
        return None if file_id is None else check_data_file(session, owner_id, file_id, param)

    ewc = spec.regularizers.ewc
    return JobFiles(
        training=check_data_file(session, owner_id, spec.training_file, "training_file"),
        validation=optional(spec.validation_file, "validation_file"),
        fisher=optional(ewc.fisher_file if ewc is not None else None, "regularizers.ewc.fisher_file"),
    )


def check_from_checkpoint(session: Session, owner_id: str, spec: JobSpec) -> None:
    """Refuse a `from_checkpoint` that is not the owner's, or does not fit the job's base and method."""
    if spec.from_checkpoint is None:
        return
    found = checkpoint_crud.owned_checkpoint(session, owner_id=owner_id, checkpoint_id=spec.from_checkpoint)
    if found is None:
        raise NotFound(
            f"no checkpoint with id {spec.from_checkpoint!r}",
            param="from_checkpoint",
            code="checkpoint_not_found",
        )
    _, job = found
    differences = spec_differences(JobSpec.model_validate(job.spec), spec)
    if differences:
        raise ApiError(
            f"checkpoint {spec.from_checkpoint!r} was trained with another {', '.join(differences)} "
            f"(job {job.id}); a job can only start from a checkpoint of the same base model, task, "
            "method and head",
            param="from_checkpoint",
            code="checkpoint_mismatch",
            status_code=422,
        )


def spec_differences(trained: JobSpec, new: JobSpec) -> list[str]:
    """What the checkpoint's tensors depend on and `new` changes: their names, and shapes, come from these."""
    parts = {
        "base_model": (trained.base_model, new.base_model),
        "task": (trained.task, new.task),
        "method": (trained.method.model_dump(mode="json"), new.method.model_dump(mode="json")),
        "head": (trained.head.model_dump(mode="json"), new.head.model_dump(mode="json")),
    }
    return [name for name, (before, after) in parts.items() if before != after]


def _validation_report(
    settings: Settings, spec: JobSpec, base_path: Path, files: JobFiles
) -> dict[str, Any] | None:
    """The validating_files report stored with the job; 422 naming the file and line that cannot train it.

    The files are read where they are stored, or from a copy downloaded for this validation alone."""
    keys = {"training_file": files.training}
    if files.validation is not None:
        keys["validation_file"] = files.validation
    storage = open_storage(settings)
    uploads_dir(settings).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="validate-", dir=uploads_dir(settings)) as scratch:
        paths = {param: storage.local_file(key, Path(scratch)) for param, key in keys.items()}
        try:
            return validate_files(spec, base_path, paths)
        except (DataError, SpecError) as error:
            raise ApiError(error.message, param=error.param, code=error.code, status_code=422) from None


def _with_estimate(
    worker: Worker, spec: JobSpec, base_path: Path, report: dict[str, Any] | None
) -> dict[str, Any] | None:
    """The report as a job stores it: with the uncalibrated estimate, which later dry runs calibrate on."""
    if report is None:
        return None
    estimate = uncalibrated_estimate(worker, spec, base_path, report)
    return {
        **report,
        "estimate": {"steps": estimate.steps, "tokens": estimate.tokens, "seconds": estimate.seconds},
    }


def uncalibrated_estimate(worker: Worker, spec: JobSpec, base_path: Path, report: dict[str, Any]) -> Estimate:
    """The estimate from the worker's figures alone (service.worker_figures), before any calibration."""
    return estimate_job(spec, base_path, report, worker=worker)


def fits_worker(settings: Settings, estimate: Estimate) -> bool | None:
    """Whether the estimated peak fits the memory of job_queue's worker class; None: not configured."""
    if settings.worker_memory_bytes is None:
        return None
    return estimate.peak_memory_bytes <= settings.worker_memory_bytes


def check_fits_worker(settings: Settings, estimate: Estimate) -> None:
    """422 before anything is stored when the job would not fit its worker class's memory."""
    if fits_worker(settings, estimate) is False:
        raise ApiError(
            f"the job's estimated peak memory, {_gib(estimate.peak_memory_bytes)}, exceeds the "
            f"{_gib(settings.worker_memory_bytes or 0)} of the {settings.job_queue!r} workers: lower "
            "hyperparameters.batch_size or max_seq_length, set hyperparameters.gradient_checkpointing, or "
            "pick a method that trains fewer parameters (a dry run shows the estimate by part)",
            param="hyperparameters",
            code="job_exceeds_worker_memory",
            status_code=422,
        )


def _gib(count: int) -> str:
    return f"{count / 2**30:.2f} GiB"


def dry_run(
    session: Session,
    settings: Settings,
    figures: EstimateWorker,
    spec: JobSpec,
    base_path: Path,
    report: dict[str, Any] | None,
) -> DryRun:
    """The report with the job's steps, tokens, time and memory; nothing is created or queued.

    The FLOP count alone misses a worker's overheads (evaluation batches, the optimizer, Python), so
    the time is scaled by the median measured/estimated ratio of this queue's last finished jobs.
    """
    if report is None:
        return DryRun(validation=report)
    estimate = uncalibrated_estimate(figures.worker, spec, base_path, report)
    ratios = job_crud.estimate_ratios(session, queue=settings.job_queue, limit=CALIBRATION_JOBS)
    seconds, method = estimate.seconds, f"{estimate.method}\n - {figures.description}"
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
        estimated_peak_memory_parts=dict(estimate.memory_parts),
        worker_memory_bytes=settings.worker_memory_bytes,
        fits_worker=fits_worker(settings, estimate),
        estimate_method=method,
        worker_figures_source=figures.source,
        hyperparameters=dict(estimate.hyperparameters),
        auto_reasons=dict(estimate.auto_reasons),
    )


def _send(celery: Celery, job: Job) -> None:
    # Only after COMMIT (create_job commits): a worker that receives the id must find the row.
    try:
        enqueue_job(celery, job.id, job.queue)
    except Exception:
        # The job stays queued and is not lost: workers re-send queued jobs when they start.
        logger.exception("could not reach the broker for job %s; it stays queued", job.id)
