"""Pause and resume as both APIs offer them (/v1/jobs/{id}/pause and /v1/fine_tuning/jobs/{id}/pause):
decide from the job's status, make the conditional change, and say plainly why when none applies.

Each change is one conditional UPDATE; a worker may move the job between our read and our write, so
a lost race means re-reading and deciding again (at most a few times), as a cancel does.
"""

import logging

from celery import Celery
from sqlalchemy.orm import Session

from core.dispatch import enqueue_job
from core.models import Job, JobStatus
from service.crud import pauses as crud
from service.errors import Conflict

logger = logging.getLogger(__name__)

ATTEMPTS = 3


def pause_job(session: Session, job: Job) -> Job:
    """Pause a queued job at once, or ask a running one to pause at its next step boundary; a paused
    job stays paused. 409 for a finished job or one being cancelled."""
    for _ in range(ATTEMPTS):
        if job.status == JobStatus.PAUSED:
            return job
        if job.status == JobStatus.RUNNING and job.cancel_requested:
            raise Conflict(f"job {job.id!r} is being cancelled; it cannot be paused", code="job_cancelling")
        if job.status not in (JobStatus.QUEUED, JobStatus.RUNNING):
            raise Conflict(f"job {job.id!r} already {job.status}; it cannot be paused", code="job_finished")
        if crud.pause_queued(session, job=job) or crud.request_pause(session, job=job):
            break
        session.refresh(job)
    session.refresh(job)
    return job


def resume_job(session: Session, celery: Celery, job: Job) -> Job:
    """Queue a paused job again and send it; 409 for any other status, saying what to do."""
    if job.status == JobStatus.RUNNING and job.pause_requested:
        raise Conflict(
            f"job {job.id!r} is still running toward its pause; resume it once its status is paused",
            code="job_not_paused",
        )
    if not crud.resume_paused(session, job=job):
        session.refresh(job)
        raise Conflict(
            f"job {job.id!r} is {job.status}; only a paused job can be resumed", code="job_not_paused"
        )
    session.refresh(job)
    _send(celery, job)
    return job


def _send(celery: Celery, job: Job) -> None:
    # After COMMIT: the worker that receives the id must find the row queued.
    try:
        enqueue_job(celery, job.id, job.queue)
    except Exception:
        # Queued, not lost: the sweep re-sends queued jobs whose message may have been lost.
        logger.exception("could not reach the broker for resumed job %s; it stays queued", job.id)
