"""The one lifecycle of what a worker runs, jobs and transferability runs alike, with leases.

    queued ──claim──▶ running ──finish──▶ succeeded | failed | cancelled
      ▲  ▲               │  │
      │  └──sweep: lease ┘  └──pause asked──▶ paused (a resume point kept; no lease, never swept)
      │     expired              (expired with a cancel asked for: cancelled)        │
      └────────────────────────────── resume (the API) ──────────────────────────────┘

A claim is one conditional UPDATE that takes a row that is queued, or running with an expired lease
(its worker died or froze), increments its `attempt` and gives it a lease until now + lease_seconds.
The attempt number is the fencing token: every write the attempt makes afterwards (heartbeat,
progress, events, checkpoints, artifact rows, the end) is conditional, in its own transaction, on
`attempt = mine AND status = 'running'`, so an attempt that lost its job changes nothing. A lease is
never taken while it is fresh, whatever the hostnames: two live workers of one name are two workers.
Of two claims, or a claim and a cancel, exactly one wins, on SQLite and on PostgreSQL alike.

The sweep (worker/sweep.py) puts rows whose lease expired back to queued and sends them again, and
re-sends queued rows whose message may have been lost; the claim makes duplicates harmless.
Transient database faults are retried with backoff (`retry_database`) for `database_outage_seconds`.
"""

import errno
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from celery import Celery
from sqlalchemy import ColumnElement, and_, false, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from core.db import database_unavailable
from core.dispatch import enqueue_job, enqueue_transferability
from core.models import Base, Job, JobEvent, JobStatus, TransferabilityRun, utcnow
from core.storage import StoreUnavailable
from core.webhook_outbox import record_job_deliveries
from tuning.errors import TuningError

logger = logging.getLogger(__name__)

INTERNAL_ERROR = "internal_error"
STORAGE_UNAVAILABLE = "storage_unavailable"
DISK_FULL = "disk_full"
DATABASE_UNAVAILABLE = "database_unavailable"
# A re-sent message waits resend_after_seconds · 2^n before the next one, n capped here (64×).
MAX_RESEND_DOUBLINGS = 6

T = TypeVar("T")


class JobFailure(Exception):
    """Why a job (or run) failed, in the shape of its `error` object."""

    def __init__(self, code: str, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.param = param


class LostLease(Exception):
    """This attempt no longer holds its row: the lease expired and the row was queued again or taken
    by another attempt, or the row ended. The attempt stops and writes nothing more."""


class OutcomeUnknown(JobFailure):
    """An end whose commit may or may not have gone through, and the database too long unreachable
    to read it back: nothing it would have named may be deleted."""


def database_outage(seconds: float) -> JobFailure:
    return JobFailure(
        DATABASE_UNAVAILABLE,
        f"the database could not be reached for more than {seconds:g} seconds while the job was running",
    )


def retry_database(
    operation: Callable[[], T],
    *,
    outage_seconds: float,
    what: str,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """`operation()`, tried again with backoff while the database is unavailable (core.db's test);
    JobFailure `database_unavailable` once that has lasted `outage_seconds`. Other errors pass through."""
    started: float | None = None
    delay = 0.05
    while True:
        try:
            return operation()
        except Exception as error:
            if not database_unavailable(error):
                raise
            now = clock()
            started = now if started is None else started
            if now - started >= outage_seconds:
                raise database_outage(outage_seconds) from error
            logger.warning("%s: the database is unavailable (%s); retrying in %.2fs", what, error, delay)
            sleep(delay)
            delay = min(delay * 2, 2.0)


def status_event(job_id: str, status: str, message: str, *, level: str = "info", **data: Any) -> JobEvent:
    """A `status` event: one for each change of a job's status, in the transaction that makes it."""
    return JobEvent(
        job_id=job_id, type="status", level=level, message=message, data={"status": status} | data
    )


def aware(moment: datetime) -> datetime:
    """SQLite hands timestamps back without their zone; every one deltatune writes is UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


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
    # Called in the transaction that ends a row (the webhook outbox of jobs), after the UPDATE.
    on_end: Callable[[Session, str], object] | None = None

    def claim(
        self,
        sessions: sessionmaker[Session],
        row_id: str,
        *,
        worker: str,
        lease_seconds: float,
        outage_seconds: float,
    ) -> "Attempt | None":
        """The row for a new attempt of `worker`, if it is queued or its lease expired; None when it is
        not claimable (running under a fresh lease, ended, unknown): do nothing then."""
        table = self.table
        with sessions.begin() as session:
            now = utcnow()
            found = session.execute(
                select(table.status, table.attempt, table.worker, self._cancel_requested()).where(
                    table.id == row_id
                )
            ).first()
            if found is None:
                return None
            status, previous, previous_worker, cancel_requested = found
            if status == JobStatus.QUEUED:
                claimable: ColumnElement[bool] = table.status == JobStatus.QUEUED
            elif status == JobStatus.RUNNING and not cancel_requested:
                claimable = and_(table.status == JobStatus.RUNNING, self._expired(now))
            else:
                return None
            number = previous + 1
            claimed = session.execute(
                update(table)
                .where(table.id == row_id, table.attempt == previous, claimable)
                .values(
                    status=JobStatus.RUNNING,
                    attempt=number,
                    worker=worker,
                    started_at=now,
                    heartbeat_at=now,
                    lease_expires_at=now + timedelta(seconds=lease_seconds),
                )
                .execution_options(synchronize_session=False)
            )
            if claimed.rowcount != 1:  # type: ignore[attr-defined]
                return None
            message = f"claimed by worker {worker} (attempt {number})"
            if status == JobStatus.RUNNING:
                message += f"; the lease of attempt {previous} (worker {previous_worker}) had expired"
            # Same transaction: a client never sees `running` without the event that says who runs it.
            self._event(session, row_id, JobStatus.RUNNING, message, worker=worker, attempt=number)
        logger.info("%s %s claimed by %s (attempt %d)", self.noun, row_id, worker, number)
        return Attempt(self, sessions, row_id, number, worker, lease_seconds, outage_seconds)

    def requeue_expired(self, sessions: sessionmaker[Session], celery: Celery) -> list[str]:
        """Running rows whose lease expired: back to queued and sent again, or cancelled when a client
        asked for it; the ids of those this call moved (of racing sweeps, one moves each row)."""
        table = self.table
        now = utcnow()
        with sessions() as session:
            expired = session.execute(
                select(table.id, table.attempt, table.worker, table.queue, self._cancel_requested())
                .where(table.status == JobStatus.RUNNING, self._expired(now))
                .order_by(table.created_at)
            ).all()
        moved = []
        for row_id, attempt, worker, queue, cancel_requested in expired:
            unchanged = (table.id == row_id, table.attempt == attempt, table.status == JobStatus.RUNNING)
            with sessions.begin() as session:
                if cancel_requested:
                    values: dict[str, Any] = {"status": JobStatus.CANCELLED, "finished_at": now}
                    message = "cancelled; its worker stopped"
                else:
                    values = {"status": JobStatus.QUEUED, "started_at": None, "dispatched_at": now}
                    values |= {"dispatches": 0, **self.requeue_resets}
                    message = (
                        f"queued again: the lease of attempt {attempt} expired "
                        f"(worker {worker} stopped heartbeating)"
                    )
                changed = session.execute(
                    update(table)
                    .where(*unchanged, self._expired(now))
                    .values(lease_expires_at=None, **values)
                    .execution_options(synchronize_session=False)
                )
                if changed.rowcount != 1:  # type: ignore[attr-defined]
                    continue  # renewed meanwhile, or another sweep got there first
                self._event(session, row_id, values["status"], message, attempt=attempt)
                if cancel_requested:
                    self._ended(session, row_id)
            logger.warning("%s %s: %s", self.noun, row_id, message)
            if not cancel_requested:
                self._send(celery, row_id, queue)
            moved.append(row_id)
        return moved

    def resend_queued(
        self, sessions: sessionmaker[Session], celery: Celery, *, after_seconds: float | None = None
    ) -> list[str]:
        """Send queued rows again, oldest first: every one (`after_seconds` None, at worker start), or
        those whose last message is older than after_seconds · 2^(re-sends so far). The claim makes a
        duplicate harmless; the backoff keeps a long queue from filling the broker with them."""
        table = self.table
        now = utcnow()
        with sessions() as session:
            queued = session.execute(
                select(table.id, table.queue, table.dispatched_at, table.dispatches)
                .where(table.status == JobStatus.QUEUED)
                .order_by(table.created_at)
            ).all()
        sent = []
        for row_id, queue, dispatched_at, dispatches in queued:
            if after_seconds is not None and dispatched_at is not None:
                wait = after_seconds * 2 ** min(dispatches, MAX_RESEND_DOUBLINGS)
                if aware(dispatched_at) + timedelta(seconds=wait) > now:
                    continue
            last = (
                table.dispatched_at.is_(None)
                if dispatched_at is None
                else table.dispatched_at == dispatched_at
            )
            with sessions.begin() as session:
                changed = session.execute(
                    update(table)
                    .where(table.id == row_id, table.status == JobStatus.QUEUED, last)
                    .values(dispatched_at=now, dispatches=table.dispatches + 1)
                    .execution_options(synchronize_session=False)
                )
            if changed.rowcount == 1:  # type: ignore[attr-defined]
                self._send(celery, row_id, queue)
                sent.append(row_id)
        if sent:
            logger.info("re-sent %d queued %ss: %s", len(sent), self.noun, ", ".join(sent))
        return sent

    def end(
        self,
        session: Session,
        row_id: str,
        attempt: int,
        status: JobStatus,
        message: str,
        *,
        columns: Mapping[str, Any] | None = None,
        level: str = "info",
        **event_data: Any,
    ) -> bool:
        """End attempt `attempt` of a running row in the caller's transaction (a publish commits its
        artifact rows with it); False when that attempt no longer holds it."""
        moved = session.execute(
            update(self.table)
            .where(*self.held_by(row_id, attempt))
            .values(status=status, finished_at=utcnow(), lease_expires_at=None, **(columns or {}))
            .execution_options(synchronize_session=False)
        )
        if moved.rowcount != 1:  # type: ignore[attr-defined]
            return False
        self._event(session, row_id, status, message, level=level, **event_data)
        self._ended(session, row_id)
        return True

    def held_by(self, row_id: str, attempt: int) -> tuple[ColumnElement[bool], ...]:
        """The fence: the row is running under `attempt`."""
        table = self.table
        return (table.id == row_id, table.attempt == attempt, table.status == JobStatus.RUNNING)

    def failure(self, row_id: str, error: BaseException) -> JobFailure:
        """What to record for `error`: its own code, a full disk, an outage, or the worker's fault."""
        if isinstance(error, JobFailure):
            return error
        if disk_full(error):
            # No path in the message: the client has no business with the server's folders.
            return JobFailure(DISK_FULL, "the worker's disk is full; the job's files could not be written")
        if isinstance(error, TuningError):
            return JobFailure(error.code, error.message, param=error.param)
        if database_unavailable(error):
            return JobFailure(DATABASE_UNAVAILABLE, "the database could not be reached while the job ran")
        if isinstance(error, StoreUnavailable):
            # No endpoint in the message either: where the store is is the server's business.
            return JobFailure(STORAGE_UNAVAILABLE, "the object store could not be reached while the job ran")
        logger.error("%s %s hit an unexpected error", self.noun, row_id, exc_info=error)
        return JobFailure(
            INTERNAL_ERROR, f"the worker hit an unexpected error: {type(error).__name__}: {error}"
        )

    def _expired(self, now: datetime) -> ColumnElement[bool]:
        # No lease at all: a row left running by a deltatune from before leases.
        return or_(self.table.lease_expires_at.is_(None), self.table.lease_expires_at < now)

    def _cancel_requested(self) -> ColumnElement[bool]:
        if self.table is Job:
            return Job.cancel_requested.expression
        return false().label("cancel_requested")

    def _pause_requested(self) -> ColumnElement[bool]:
        if self.table is Job:
            return Job.pause_requested.expression
        return false().label("pause_requested")  # transferability runs are short: never paused

    def _event(self, session: Session, row_id: str, status: str, message: str, **data: Any) -> None:
        if self.status_events:
            session.add(status_event(row_id, status, message, **data))

    def _ended(self, session: Session, row_id: str) -> None:
        if self.on_end is not None:
            self.on_end(session, row_id)

    def _send(self, celery: Celery, row_id: str, queue: str) -> None:
        try:
            self.enqueue(celery, row_id, queue)
        except Exception:
            # Still queued, with dispatched_at now: the next sweep sends it again.
            logger.exception(
                "could not send %s %s to the broker; a later sweep re-sends it", self.noun, row_id
            )


def disk_full(error: BaseException) -> bool:
    """Whether `error`, or one it was raised from, says the disk is full (safetensors and torch word it)."""
    seen: BaseException | None = error
    for _ in range(8):
        if seen is None:
            return False
        if isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        text = str(seen)
        if "No space left on device" in text or "StorageFull" in text or "Disk quota exceeded" in text:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


JOBS = Lifecycle(
    Job,
    "job",
    enqueue_job,
    status_events=True,
    error_param=True,
    requeue_resets={"progress": 0.0, "estimated_finish_at": None},
    on_end=record_job_deliveries,
)
RUNS = Lifecycle(TransferabilityRun, "transferability run", enqueue_transferability)


@dataclass(frozen=True)
class Requests:
    """What a client asked of a running row, as its heartbeat reads it."""

    cancel: bool = False
    pause: bool = False


@dataclass(frozen=True)
class Attempt:
    """One claim of a row: every write it makes is fenced by its number and retried through outages."""

    lifecycle: Lifecycle
    sessions: sessionmaker[Session]
    row_id: str
    number: int
    worker: str
    lease_seconds: float
    outage_seconds: float

    def fence(self, session: Session) -> None:
        """The first statement of each of this attempt's write transactions: it renews the lease (any
        write proves the attempt alive) and locks the row, so nothing else moves it before the commit.
        LostLease when the attempt no longer holds it; the transaction must then roll back."""
        now = utcnow()
        renewed = session.execute(
            update(self.lifecycle.table)
            .where(*self.lifecycle.held_by(self.row_id, self.number))
            .values(heartbeat_at=now, lease_expires_at=now + timedelta(seconds=self.lease_seconds))
            .execution_options(synchronize_session=False)
        )
        if renewed.rowcount != 1:  # type: ignore[attr-defined]
            raise LostLease(f"{self.lifecycle.noun} {self.row_id} is no longer held by attempt {self.number}")

    def write(self, change: Callable[[Session], T], *, what: str = "write") -> T:
        """`change(session)` in one fenced transaction, retried while the database is unavailable."""

        def once() -> T:
            with self.sessions.begin() as session:
                self.fence(session)
                return change(session)

        return retry_database(once, outage_seconds=self.outage_seconds, what=f"{self.describe()}: {what}")

    def renew(self) -> "Requests":
        """The heartbeat: the lease renewed and what a client asked of the row read in one round trip.
        LostLease when the attempt no longer holds the row."""
        table = self.lifecycle.table
        now = utcnow()
        with self.sessions.begin() as session:
            returned = session.execute(
                update(table)
                .where(*self.lifecycle.held_by(self.row_id, self.number))
                .values(heartbeat_at=now, lease_expires_at=now + timedelta(seconds=self.lease_seconds))
                .returning(self.lifecycle._cancel_requested(), self.lifecycle._pause_requested())
                .execution_options(synchronize_session=False)
            ).first()
        if returned is None:
            raise LostLease(f"{self.describe()} lost its lease")
        return Requests(cancel=bool(returned[0]), pause=bool(returned[1]))

    def pause(self, *, step: int) -> bool:
        """Running → paused with a resume point of `step` kept: the lease released, nothing finished.
        False (nothing written) when a cancel was asked meanwhile: the caller records that instead.
        LostLease when this attempt no longer holds the row."""
        table = self.lifecycle.table

        def change(session: Session) -> bool:
            paused = session.execute(
                update(table)
                .where(*self.lifecycle.held_by(self.row_id, self.number), ~self.lifecycle._cancel_requested())
                .values(status=JobStatus.PAUSED, lease_expires_at=None, pause_requested=False)
                .execution_options(synchronize_session=False)
            )
            if paused.rowcount != 1:  # type: ignore[attr-defined]
                return False
            message = f"paused at step {step}; resume it to go on from there"
            self.lifecycle._event(
                session, self.row_id, JobStatus.PAUSED, message, step=step, attempt=self.number
            )
            return True

        paused = self.write(change, what="recording paused")
        if paused:
            logger.info("%s paused at step %d", self.describe(), step)
        return paused

    def finish(
        self,
        status: JobStatus,
        message: str,
        *,
        columns: Mapping[str, Any] | None = None,
        rows: Callable[[], Iterable[Base]] = tuple,
        level: str = "info",
        **event_data: Any,
    ) -> None:
        """End the row (with `rows`, e.g. artifact rows, in the same transaction); LostLease when this
        attempt no longer holds it. A commit whose outcome is unknown (the connection lost in it) is
        settled by reading the row back, never assumed either way."""
        lifecycle = self.lifecycle

        def once() -> None:
            with self.sessions.begin() as session:
                if not lifecycle.end(
                    session,
                    self.row_id,
                    self.number,
                    status,
                    message,
                    columns=columns,
                    level=level,
                    **event_data,
                ):
                    raise LostLease(f"{self.describe()} no longer holds it; {status} not recorded")
                session.add_all(rows())

        started = time.monotonic()
        while True:
            try:
                once()
                return
            except Exception as error:
                if not database_unavailable(error):
                    raise
                logger.warning(
                    "%s: recording %s failed (%s); reading the row back", self.describe(), status, error
                )
            try:
                ended = retry_database(
                    self._ended_as, outage_seconds=self.outage_seconds, what=self.describe()
                )
            except JobFailure as outage:
                raise OutcomeUnknown(outage.code, outage.message) from outage
            if ended == status:
                return  # the commit went through after all
            if ended is not None:
                raise LostLease(f"{self.describe()} no longer holds it")
            if time.monotonic() - started >= self.outage_seconds:  # not committed, and never would be
                raise database_outage(self.outage_seconds)
            time.sleep(0.1)

    def succeed(self, **columns: Any) -> None:
        self.finish(JobStatus.SUCCEEDED, "succeeded", columns=columns)
        logger.info("%s succeeded", self.describe())

    def fail(self, error: BaseException) -> None:
        """Record `error` as the reason; an unexpected one is logged with its traceback and called so."""
        failure = self.lifecycle.failure(self.row_id, error)
        columns: dict[str, Any] = {"error_code": failure.code, "error_message": failure.message}
        if self.lifecycle.error_param:
            columns["error_param"] = failure.param
        self.finish(
            JobStatus.FAILED,
            f"failed: {failure.message}",
            columns=columns,
            level="error",
            code=failure.code,
            param=failure.param,
        )
        logger.warning("%s failed (%s): %s", self.describe(), failure.code, failure.message)

    def cancel(self) -> None:
        self.finish(JobStatus.CANCELLED, "cancelled; nothing was published")
        logger.info("%s cancelled", self.describe())

    def describe(self) -> str:
        return f"{self.lifecycle.noun} {self.row_id} attempt {self.number}"

    def _ended_as(self) -> str | None:
        """None while this attempt still holds the row; else its status (`running`: another attempt's)."""
        table = self.lifecycle.table
        with self.sessions() as session:
            found = session.execute(
                select(table.status, table.attempt).where(table.id == self.row_id)
            ).first()
        if found is None:
            return JobStatus.CANCELLED  # deleted: nothing of ours may land
        status, attempt = found
        if attempt == self.number and status == JobStatus.RUNNING:
            return None
        return str(status) if attempt == self.number else JobStatus.RUNNING
