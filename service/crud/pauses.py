"""Pausing and resuming a job: conditional UPDATEs on its status, each with the event that says so.

A queued job pauses at once (a worker's claim then finds it paused and leaves it). A running job is
only asked to: its worker reads `pause_requested` with its next heartbeat, keeps a resume point at
the next step boundary and records `paused` itself (worker.lifecycle.Attempt.pause). Resuming puts a
paused job back to queued; the caller then sends it, and the worker that claims it goes on from the
resume point (worker.job_runner resumes from the latest one on every claim).
"""

from sqlalchemy import update
from sqlalchemy.orm import Session

from core.models import Job, JobStatus, utcnow
from service.crud.jobs import add_event


def pause_queued(session: Session, *, job: Job) -> bool:
    """Queued → paused in one conditional UPDATE: a worker's claim can never win afterwards."""
    result = session.execute(
        update(Job)
        .where(Job.id == job.id, Job.status == JobStatus.QUEUED)
        .values(status=JobStatus.PAUSED, pause_requested=False)
    )
    if result.rowcount:  # type: ignore[attr-defined]
        add_event(
            session,
            job_id=job.id,
            type="status",
            message="Job paused before it started",
            data={"status": JobStatus.PAUSED.value},
        )
    session.commit()
    return bool(result.rowcount)  # type: ignore[attr-defined]


def request_pause(session: Session, *, job: Job) -> bool:
    """Ask a running job to pause (True also when it was asked already); its worker records `paused`."""
    asked_before = job.pause_requested  # read first: the UPDATE below refreshes the object
    result = session.execute(
        update(Job)
        .where(Job.id == job.id, Job.status == JobStatus.RUNNING, Job.cancel_requested.is_(False))
        .values(pause_requested=True)
    )
    if result.rowcount and not asked_before:  # type: ignore[attr-defined]
        # Not a status event: the job stays running until its worker reaches a step boundary.
        add_event(
            session, job_id=job.id, type="message", message="Pause requested", data={"pause_requested": True}
        )
    session.commit()
    return bool(result.rowcount)  # type: ignore[attr-defined]


def resume_paused(session: Session, *, job: Job) -> bool:
    """Paused → queued, its message due now; the caller sends it after this commit."""
    result = session.execute(
        update(Job)
        .where(Job.id == job.id, Job.status == JobStatus.PAUSED)
        .values(
            status=JobStatus.QUEUED,
            pause_requested=False,
            started_at=None,
            dispatched_at=utcnow(),
            dispatches=0,
        )
    )
    if result.rowcount:  # type: ignore[attr-defined]
        add_event(
            session,
            job_id=job.id,
            type="status",
            message="Job resumed: queued to go on from its resume point",
            data={"status": JobStatus.QUEUED.value},
        )
    session.commit()
    return bool(result.rowcount)  # type: ignore[attr-defined]
