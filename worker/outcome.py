"""Recording how a job ended when nothing is published: failed (with its reason) or cancelled."""

import logging
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from core.models import Job, JobEvent, JobStatus, utcnow

logger = logging.getLogger(__name__)

INTERNAL_ERROR = "internal_error"


class JobFailure(Exception):
    """Why a job failed, in the shape of the job's `error` object."""

    def __init__(self, code: str, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.param = param


def status_event(job_id: str, status: str, message: str, *, level: str = "info", **data: Any) -> JobEvent:
    """A `status` event; the worker writes one when it claims a job and one when the job ends."""
    return JobEvent(
        job_id=job_id, type="status", level=level, message=message, data={"status": status} | data
    )


def record_failure(sessions: sessionmaker[Session], job_id: str, failure: JobFailure) -> None:
    with sessions.begin() as session:
        _finish(
            session,
            job_id,
            JobStatus.FAILED,
            error_code=failure.code,
            error_message=failure.message,
            error_param=failure.param,
        )
        session.add(
            status_event(
                job_id,
                JobStatus.FAILED,
                f"failed: {failure.message}",
                level="error",
                code=failure.code,
                param=failure.param,
            )
        )
    logger.warning("job %s failed (%s): %s", job_id, failure.code, failure.message)


def record_cancelled(sessions: sessionmaker[Session], job_id: str) -> None:
    with sessions.begin() as session:
        _finish(session, job_id, JobStatus.CANCELLED)
        session.add(status_event(job_id, JobStatus.CANCELLED, "cancelled; nothing was published"))
    logger.info("job %s cancelled", job_id)


def _finish(session: Session, job_id: str, status: str, **values: Any) -> None:
    # Only a running job can end here: the claim made it running, and nothing else moves it on.
    session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.RUNNING)
        .values(status=status, finished_at=utcnow(), **values)
        .execution_options(synchronize_session=False)
    )
