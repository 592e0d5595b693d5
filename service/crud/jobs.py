"""Jobs, their events and artifacts: the rows behind /v1/jobs, always scoped to their owner."""

from collections.abc import Callable
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from core.models import ACTIVE, CANCELLABLE_AT_ONCE, Artifact, Checkpoint, Job, JobEvent, JobStatus, utcnow
from core.webhook_outbox import record_job_deliveries
from service.crud import storable
from service.crud.pages import newest_first_page
from tuning.spec import JobSpec


def create_job(
    session: Session,
    *,
    owner_id: str,
    spec: JobSpec,
    queue: str,
    validation: dict[str, Any] | None = None,
    webhook_url: str | None = None,
    before_commit: Callable[[Job], None] | None = None,
) -> Job:
    """Insert and COMMIT a queued job; only after this may the job be sent to a worker.

    `before_commit` sees the inserted row (ids and defaults filled in) and may add to the same
    transaction, as the idempotency key's response is.
    """
    job = Job(
        owner_id=owner_id,
        status=JobStatus.QUEUED,
        spec=spec.model_dump(mode="json"),
        base_model=spec.base_model,
        method=spec.method.type,
        training_file_id=spec.training_file,
        validation_file_id=spec.validation_file,
        queue=queue,
        validation=validation,
        webhook_url=webhook_url,
    )
    session.add(job)
    if before_commit is not None:
        session.flush()
        before_commit(job)
    session.commit()
    return job


def get_job(session: Session, *, owner_id: str, job_id: str) -> Job | None:
    if not storable(job_id):
        return None
    return session.scalar(select(Job).where(Job.id == job_id, Job.owner_id == owner_id))


def list_jobs(
    session: Session, *, owner_id: str, limit: int, after: Job | None = None
) -> tuple[list[Job], bool]:
    query = select(Job).where(Job.owner_id == owner_id)
    return newest_first_page(session, query, Job, limit=limit, after=after)


def cancel_job_not_started(session: Session, *, job: Job) -> bool:
    """Queued (or paused) → cancelled in one conditional UPDATE, so a worker's claim can never win
    afterwards."""
    before = job.status
    result = session.execute(
        update(Job)
        .where(Job.id == job.id, Job.status == before, Job.status.in_(CANCELLABLE_AT_ONCE))
        .values(status=JobStatus.CANCELLED, finished_at=utcnow())
    )
    if result.rowcount:  # type: ignore[attr-defined]
        add_event(
            session,
            job_id=job.id,
            type="status",
            message="Job cancelled while paused"
            if before == JobStatus.PAUSED
            else "Job cancelled before it started",
            data={"status": JobStatus.CANCELLED.value},
        )
        record_job_deliveries(session, job.id)  # the outbox: committed with the cancel, or not at all
    session.commit()
    return bool(result.rowcount)  # type: ignore[attr-defined]


def request_cancel(session: Session, *, job: Job) -> bool:
    """Ask a running job to stop; its worker sees the flag and records `cancelled` itself."""
    result = session.execute(
        update(Job).where(Job.id == job.id, Job.status == JobStatus.RUNNING).values(cancel_requested=True)
    )
    if result.rowcount:  # type: ignore[attr-defined]
        # Not a status event: the job stays running until its worker sees the flag and stops.
        add_event(
            session,
            job_id=job.id,
            type="message",
            message="Cancellation requested",
            data={"cancel_requested": True},
        )
    session.commit()
    return bool(result.rowcount)  # type: ignore[attr-defined]


def jobs_needing(session: Session, *, job: Job) -> list[Job]:
    """The owner's jobs that need `job` kept: any that builds on its model (a chain is rebuilt from
    every link's artifact), and the unfinished ones that start from one of its checkpoints."""
    building_on = select(Job).where(Job.owner_id == job.owner_id, Job.base_model == job.id)
    needing = list(session.scalars(building_on.order_by(Job.id)))
    checkpoints = set(session.scalars(select(Checkpoint.id).where(Checkpoint.job_id == job.id)))
    if checkpoints:
        active = select(Job).where(Job.owner_id == job.owner_id, Job.status.in_(ACTIVE))
        needing += [j for j in session.scalars(active) if _starts_from(j) in checkpoints]
    return needing


def _starts_from(job: Job) -> str | None:
    checkpoint = (job.spec or {}).get("from_checkpoint")
    return checkpoint if isinstance(checkpoint, str) else None


def delete_job(session: Session, *, job: Job) -> None:
    """Forget a finished job: its row, and with it (ON DELETE CASCADE) its events, artifact and
    checkpoint rows and webhook deliveries."""
    session.delete(job)
    session.commit()


def add_event(
    session: Session,
    *,
    job_id: str,
    type: str,
    message: str,
    level: str = "info",
    data: dict[str, Any] | None = None,
) -> None:
    session.add(JobEvent(job_id=job_id, type=type, message=message, level=level, data=data or {}))


def list_events(
    session: Session, *, job_id: str, limit: int, after: int | None = None
) -> tuple[list[JobEvent], bool]:
    """Oldest first: events read like a log, and `after` resumes where the last poll stopped."""
    query = select(JobEvent).where(JobEvent.job_id == job_id)
    if after is not None:
        query = query.where(JobEvent.id > after)
    rows = list(session.scalars(query.order_by(JobEvent.id).limit(limit + 1)))
    return rows[:limit], len(rows) > limit


def list_artifacts(session: Session, *, job_id: str) -> list[Artifact]:
    return list(session.scalars(select(Artifact).where(Artifact.job_id == job_id).order_by(Artifact.name)))


def get_artifact(session: Session, *, job_id: str, name: str) -> Artifact | None:
    if not storable(name):
        return None
    return session.scalar(select(Artifact).where(Artifact.job_id == job_id, Artifact.name == name))


def estimate_ratios(session: Session, *, queue: str, limit: int) -> list[float]:
    """measured train_seconds / estimated seconds of the queue's newest succeeded jobs that have both."""
    query = (
        select(Job.metrics, Job.validation)
        .where(Job.queue == queue, Job.status == JobStatus.SUCCEEDED, Job.validation.is_not(None))
        .order_by(Job.finished_at.desc())
        .limit(limit)
    )
    ratios = []
    for metrics, validation in session.execute(query):
        measured = (metrics or {}).get("train_seconds")
        estimated = ((validation or {}).get("estimate") or {}).get("seconds")
        if isinstance(measured, int | float) and isinstance(estimated, int | float) and estimated > 0:
            ratios.append(measured / estimated)
    return ratios


def list_events_newest_first(
    session: Session, *, job_id: str, limit: int, before: int | None = None
) -> tuple[list[JobEvent], bool]:
    """Newest first, as OpenAI's API lists them; `before` continues below the last event of a page."""
    query = select(JobEvent).where(JobEvent.job_id == job_id)
    if before is not None:
        query = query.where(JobEvent.id < before)
    rows = list(session.scalars(query.order_by(JobEvent.id.desc()).limit(limit + 1)))
    return rows[:limit], len(rows) > limit


def metrics_events(session: Session, *, job_id: str) -> list[JobEvent]:
    """The job's training metrics events, oldest first."""
    query = (
        select(JobEvent).where(JobEvent.job_id == job_id, JobEvent.type == "metrics").order_by(JobEvent.id)
    )
    return list(session.scalars(query))
