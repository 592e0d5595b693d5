"""The rows behind a job's answer (service/job_answers.py), read by statements built once.

Building a select of twenty columns for each request and running it through the ORM's execution
cost twice what reading the rows did (0.8 ms of a 1.5 ms page on a 2-core machine, against 0.37 ms
as here): these are Core statements on the tables' columns with bound parameters, built at import
and run on the session's connection, so a request only supplies the values.

Every column of `jobs` is read except those no answer shows (`NOT_ANSWERED`), so a column added
later is read, and takes part in the kept answer's key, without anyone remembering to add it. JSON
columns are read as their text: comparing text is cheaper than parsing it, which only a miss does.
"""

from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

from sqlalchemy import JSON, ColumnElement, Row, Select, Text, bindparam, cast, inspect, select
from sqlalchemy.orm import Session

from core.models import Artifact, Job
from service.crud import storable
from service.crud.pages import newest_first

SelectedRow = Row[*tuple[Any, ...]]  # a row of whichever columns were selected

# Columns of `jobs` that no answer shows; they change (a lease's heartbeat) without the answer changing.
NOT_ANSWERED = frozenset(
    {
        "owner_id",
        "method",
        "queue",
        "worker",
        "attempt",
        "lease_expires_at",
        "heartbeat_at",
        "dispatched_at",
        "dispatches",
    }
)
JSON_COLUMNS = frozenset(
    attr.key for attr in inspect(Job).column_attrs if isinstance(attr.columns[0].type, JSON)
)


def _answered_columns() -> tuple[ColumnElement[Any], ...]:
    columns: list[ColumnElement[Any]] = []
    for attr in inspect(Job).column_attrs:
        if attr.key not in NOT_ANSWERED:
            column = attr.columns[0]
            columns.append((cast(column, Text) if attr.key in JSON_COLUMNS else column).label(attr.key))
    return tuple(columns)


JOB_COLUMNS = _answered_columns()  # labelled by attribute name: a row's values make a Job
_jobs = Job.__table__.c
_artifacts = Artifact.__table__.c
_owned = _jobs.owner_id == bindparam("owner_id")
_this_job = _jobs.id == bindparam("job_id")
_cursor = SimpleNamespace(created_at=bindparam("after_created_at"), id=bindparam("after_id"))

PAGE = newest_first(select(*JOB_COLUMNS).where(_owned), _jobs, after=None).limit(bindparam("rows"))
PAGE_AFTER = newest_first(select(*JOB_COLUMNS).where(_owned), _jobs, after=_cursor).limit(bindparam("rows"))
ONE_JOB = select(*JOB_COLUMNS).where(_this_job, _owned)
POSITION = select(_jobs.created_at, _jobs.id).where(_this_job, _owned)
ARTIFACTS: Select[Any] = (
    select(_artifacts.job_id, _artifacts.name, _artifacts.bytes, _artifacts.sha256, _artifacts.created_at)
    .where(_artifacts.job_id.in_(bindparam("job_ids", expanding=True)))
    .order_by(_artifacts.name)
)


def job_rows(
    session: Session, *, owner_id: str, limit: int, after: SelectedRow | None = None
) -> tuple[list[SelectedRow], bool]:
    """A page of the owner's jobs, newest first, after the job whose `position` is `after`; and
    whether more follow."""
    values: dict[str, Any] = {"owner_id": owner_id, "rows": limit + 1}
    if after is not None:
        values |= {"after_created_at": after.created_at, "after_id": after.id}
    rows = list(session.connection().execute(PAGE if after is None else PAGE_AFTER, values))
    return rows[:limit], len(rows) > limit


def job_row(session: Session, *, owner_id: str, job_id: str) -> SelectedRow | None:
    if not storable(job_id):
        return None
    return session.connection().execute(ONE_JOB, {"owner_id": owner_id, "job_id": job_id}).first()


def position(session: Session, *, owner_id: str, job_id: str) -> SelectedRow | None:
    """The job's place in the newest-first order (its created_at and id): a page's `after` cursor."""
    if not storable(job_id):
        return None
    return session.connection().execute(POSITION, {"owner_id": owner_id, "job_id": job_id}).first()


def artifact_rows(session: Session, *, job_ids: Sequence[str]) -> dict[str, list[SelectedRow]]:
    """The artifact rows of many jobs in one query, by job, each job's in name order."""
    found: dict[str, list[SelectedRow]] = {job_id: [] for job_id in job_ids}
    if job_ids:
        for artifact in session.connection().execute(ARTIFACTS, {"job_ids": list(job_ids)}):
            found[artifact.job_id].append(artifact)
    return found
