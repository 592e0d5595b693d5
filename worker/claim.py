"""Claiming a job: the one step that makes a repeated delivery of run_job harmless.

A conditional UPDATE (`queued` → `running`) is atomic in every database deltatune supports, so of
two deliveries, or of a delivery and a cancel, exactly one wins; the loser sees rowcount 0.
"""

import logging

from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from core.models import Job, JobStatus, utcnow
from worker.outcome import status_event

logger = logging.getLogger(__name__)


def claim_job(sessions: sessionmaker[Session], job_id: str, *, worker: str) -> bool:
    """Move a queued job to running for `worker`; False when it is not queued (any more)."""
    with sessions.begin() as session:
        claimed = session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == JobStatus.QUEUED)
            .values(status=JobStatus.RUNNING, started_at=utcnow(), worker=worker)
            .execution_options(synchronize_session=False)
        )
        if claimed.rowcount != 1:  # type: ignore[attr-defined]
            return False
        # Same transaction: a client never sees `running` without the event that says who runs it.
        session.add(status_event(job_id, JobStatus.RUNNING, f"claimed by worker {worker}", worker=worker))
    logger.info("job %s claimed by %s", job_id, worker)
    return True
