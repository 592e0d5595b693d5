"""Re-sending jobs when a worker starts, so an accepted job is never lost.

Two ways a job can be left without a message: the API committed it while the broker was down (it
stays `queued`), or the worker running it died (it stays `running` under that worker's name, and
the embedded filesystem broker loses an unacknowledged message with the process). A worker that
starts again under the same name puts its own orphans back to `queued`, then re-sends every queued
job; the claim makes a duplicate delivery harmless.
"""

import logging

from celery import Celery
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from core.dispatch import enqueue_job
from core.models import Job, JobStatus
from worker.outcome import status_event

logger = logging.getLogger(__name__)


def requeue_orphans(sessions: sessionmaker[Session], *, worker: str) -> list[str]:
    """Jobs this worker name was running when it died, put back to queued."""
    with sessions.begin() as session:
        job_ids = list(
            session.scalars(select(Job.id).where(Job.status == JobStatus.RUNNING, Job.worker == worker))
        )
        if job_ids:
            session.execute(
                update(Job)
                .where(Job.id.in_(job_ids), Job.status == JobStatus.RUNNING)
                .values(status=JobStatus.QUEUED, worker=None, started_at=None, progress=0.0)
                .execution_options(synchronize_session=False)
            )
            session.add_all(
                status_event(
                    job_id, JobStatus.QUEUED, f"queued again: worker {worker} restarted while running it"
                )
                for job_id in job_ids
            )
    for job_id in job_ids:
        logger.warning("job %s was running when worker %s stopped; queued again", job_id, worker)
    return job_ids


def resend_queued(sessions: sessionmaker[Session], celery: Celery) -> list[str]:
    """Send run_job again for every queued job, oldest first; returns their ids."""
    with sessions() as session:
        waiting = select(Job.id, Job.queue).where(Job.status == JobStatus.QUEUED).order_by(Job.created_at)
        queued = [(job_id, queue) for job_id, queue in session.execute(waiting)]
    for job_id, queue in queued:
        enqueue_job(celery, job_id, queue)
    if queued:
        logger.info("re-sent %d queued jobs: %s", len(queued), ", ".join(job_id for job_id, _ in queued))
    return [job_id for job_id, _ in queued]
