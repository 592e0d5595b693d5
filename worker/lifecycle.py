"""The one lifecycle of what a worker runs, jobs and transferability runs alike.

    queued ──claim──▶ running ──finish──▶ succeeded | failed | cancelled
      ▲                  │
      └─────requeue──────┘   when the worker that left it running starts again

The claim is one conditional UPDATE (queued → running), atomic in every database deltatune
supports: of two deliveries, or of a delivery and a cancel, exactly one wins, so a repeated message
is harmless. A row ends once, and only from running. A worker that starts again under the same name
puts the rows it left running back to queued, then re-sends every queued row: a message lost with a
killed worker (or a broker down at enqueue) never loses the work. Every status change of a claimed
row is written here: this is where leases and attempt numbers will fence them.
"""

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from celery import Celery
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from core.dispatch import enqueue_job, enqueue_transferability
from core.models import Job, JobEvent, JobStatus, TransferabilityRun, utcnow
from tuning.errors import TuningError

logger = logging.getLogger(__name__)

INTERNAL_ERROR = "internal_error"


class JobFailure(Exception):
    """Why a job (or run) failed, in the shape of its `error` object."""

    def __init__(self, code: str, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.param = param


def status_event(job_id: str, status: str, message: str, *, level: str = "info", **data: Any) -> JobEvent:
    """A `status` event: one for each change of a job's status, in the transaction that makes it."""
    return JobEvent(
        job_id=job_id, type="status", level=level, message=message, data={"status": status} | data
    )


@dataclass(frozen=True)
class Lifecycle:
    """How the rows of one table move through their statuses: `JOBS` and `RUNS` below."""

    table: type[Job] | type[TransferabilityRun]
    noun: str  # how a log line names a row
    enqueue: Callable[[Celery, str, str], None]
    # Jobs carry more than runs: an event log the client reads, the field an error names, progress.
    status_events: bool = False
    error_param: bool = False
    requeue_resets: Mapping[str, Any] = field(default_factory=dict)

    def claim(self, sessions: sessionmaker[Session], row_id: str, *, worker: str) -> bool:
        """queued → running for `worker`; False when it is not queued (any more): do nothing then."""
        with sessions.begin() as session:
            if not self._move(
                session, row_id, JobStatus.QUEUED, JobStatus.RUNNING, started_at=utcnow(), worker=worker
            ):
                return False
            # Same transaction: a client never sees `running` without the event that says who runs it.
            self._event(session, row_id, JobStatus.RUNNING, f"claimed by worker {worker}", worker=worker)
        logger.info("%s %s claimed by %s", self.noun, row_id, worker)
        return True

    def finish(
        self,
        session: Session,
        row_id: str,
        status: JobStatus,
        message: str,
        *,
        columns: Mapping[str, Any] | None = None,
        level: str = "info",
        **event_data: Any,
    ) -> bool:
        """End a running row in the caller's transaction (a publish commits its artifact rows with it);
        False when it is not running: what moved it on first wins."""
        if not self._move(
            session, row_id, JobStatus.RUNNING, status, finished_at=utcnow(), **(columns or {})
        ):
            return False
        self._event(session, row_id, status, message, level=level, **event_data)
        return True

    def succeed(self, sessions: sessionmaker[Session], row_id: str, **columns: Any) -> None:
        with sessions.begin() as session:
            self.finish(session, row_id, JobStatus.SUCCEEDED, "succeeded", columns=columns)
        logger.info("%s %s succeeded", self.noun, row_id)

    def fail(self, sessions: sessionmaker[Session], row_id: str, error: Exception) -> None:
        """Record `error` as the reason; an unexpected one is logged with its traceback and called so."""
        failure = self._failure(row_id, error)
        columns: dict[str, Any] = {"error_code": failure.code, "error_message": failure.message}
        if self.error_param:
            columns["error_param"] = failure.param
        with sessions.begin() as session:
            self.finish(
                session,
                row_id,
                JobStatus.FAILED,
                f"failed: {failure.message}",
                columns=columns,
                level="error",
                code=failure.code,
                param=failure.param,
            )
        logger.warning("%s %s failed (%s): %s", self.noun, row_id, failure.code, failure.message)

    def cancel(self, sessions: sessionmaker[Session], row_id: str) -> None:
        with sessions.begin() as session:
            self.finish(session, row_id, JobStatus.CANCELLED, "cancelled; nothing was published")
        logger.info("%s %s cancelled", self.noun, row_id)

    def requeue(self, sessions: sessionmaker[Session], celery: Celery, *, worker: str | None) -> list[str]:
        """At worker start: `worker`'s orphans back to queued, then every queued row re-sent; their ids."""
        if worker:
            self.requeue_orphans(sessions, worker=worker)
        return self.resend_queued(sessions, celery)

    def requeue_orphans(self, sessions: sessionmaker[Session], *, worker: str) -> list[str]:
        """The rows this worker name was running when it stopped, put back to queued."""
        table = self.table
        with sessions.begin() as session:
            ids = list(
                session.scalars(
                    select(table.id).where(table.status == JobStatus.RUNNING, table.worker == worker)
                )
            )
            if ids:
                session.execute(
                    update(table)
                    .where(table.id.in_(ids), table.status == JobStatus.RUNNING)
                    .values(status=JobStatus.QUEUED, worker=None, started_at=None, **self.requeue_resets)
                    .execution_options(synchronize_session=False)
                )
            for row_id in ids:
                message = f"queued again: worker {worker} restarted while running it"
                self._event(session, row_id, JobStatus.QUEUED, message)
        for row_id in ids:
            logger.warning(
                "%s %s was running when worker %s stopped; queued again", self.noun, row_id, worker
            )
        return ids

    def resend_queued(self, sessions: sessionmaker[Session], celery: Celery) -> list[str]:
        """Send every queued row again, oldest first; the claim makes a duplicate harmless."""
        table = self.table
        with sessions() as session:
            waiting = select(table.id, table.queue).where(table.status == JobStatus.QUEUED)
            rows = session.execute(waiting.order_by(table.created_at))
            queued = [(row_id, queue) for row_id, queue in rows]
        for row_id, queue in queued:
            self.enqueue(celery, row_id, queue)
        if queued:
            logger.info("re-sent %d queued %ss: %s", len(queued), self.noun, ", ".join(i for i, _ in queued))
        return [row_id for row_id, _ in queued]

    def _move(self, session: Session, row_id: str, before: str, after: str, **columns: Any) -> bool:
        """One conditional UPDATE: True when this caller moved the row from `before` (one winner)."""
        moved = session.execute(
            update(self.table)
            .where(self.table.id == row_id, self.table.status == before)
            .values(status=after, **columns)
            .execution_options(synchronize_session=False)
        )
        return bool(moved.rowcount == 1)  # type: ignore[attr-defined]

    def _event(self, session: Session, row_id: str, status: str, message: str, **data: Any) -> None:
        if self.status_events:
            session.add(status_event(row_id, status, message, **data))

    def _failure(self, row_id: str, error: Exception) -> JobFailure:
        if isinstance(error, JobFailure):
            return error
        if isinstance(error, TuningError):
            return JobFailure(error.code, error.message, param=error.param)
        logger.error("%s %s hit an unexpected error", self.noun, row_id, exc_info=error)
        return JobFailure(
            INTERNAL_ERROR, f"the worker hit an unexpected error: {type(error).__name__}: {error}"
        )


JOBS = Lifecycle(
    Job, "job", enqueue_job, status_events=True, error_param=True, requeue_resets={"progress": 0.0}
)
RUNS = Lifecycle(TransferabilityRun, "transferability run", enqueue_transferability)


class CancelPoller:
    """A running job's `should_stop`: has a client asked to cancel it?

    The loop asks before every step; reading the database that often would load it for nothing, so
    the flag is re-read at most every `every_seconds` and a cancel is seen within that time.
    """

    def __init__(
        self,
        sessions: sessionmaker[Session],
        job_id: str,
        *,
        every_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sessions = sessions
        self._job_id = job_id
        self._every_seconds = every_seconds
        self._clock = clock
        self._checked_at: float | None = None
        self._requested = False

    def __call__(self) -> bool:
        if self._requested:
            return True  # a cancel is never taken back
        now = self._clock()
        if self._checked_at is not None and now - self._checked_at < self._every_seconds:
            return False
        self._checked_at = now
        with self._sessions() as session:
            self._requested = bool(session.scalar(select(Job.cancel_requested).where(Job.id == self._job_id)))
        return self._requested
