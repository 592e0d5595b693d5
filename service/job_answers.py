"""A job's JSON answer as bytes, kept by each API process while the job's row stays the same.

A page of `GET /v1/jobs` is 20 jobs, and building each JobObject (pydantic validates every field)
and serialising it was most of a page's CPU, though few jobs change between two pages. So each job's
bytes are kept beside the exact column values, and artifact rows, they were made from; a job read
again with the same values gets the same bytes back, and any difference makes them anew. The key is
the data itself: no write anywhere (a worker's progress, a cancel, a delete, another API process)
has to invalidate anything, and an answer cannot go stale.

The columns read are every column of `jobs` except those the answer never shows (`NOT_ANSWERED`),
so a column added later is read, and takes part in the key, without anyone remembering to add it.
JSON columns are read as their text: comparing text is cheaper than parsing it, which only a miss does.
"""

from collections import OrderedDict
from collections.abc import Sequence
from threading import Lock
from typing import Any
from urllib.parse import quote

import orjson
from sqlalchemy import JSON, ColumnElement, Text, cast, inspect, select
from sqlalchemy.orm import QueryableAttribute, Session

from core.db import read_json
from core.models import Artifact, Job, JobStatus
from service.crud.jobs import SelectedRow
from service.schemas.common import optional_unix_seconds, unix_seconds
from service.schemas.jobs import ArtifactObject, JobError, JobObject
from service.stored_specs import stored_spec

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
ARTIFACT_COLUMNS: tuple[QueryableAttribute[Any], ...] = (
    Artifact.job_id,
    Artifact.name,
    Artifact.bytes,
    Artifact.sha256,
    Artifact.created_at,
)
MAX_JOBS = 4096

_JSON_COLUMNS = frozenset(
    attr.key for attr in inspect(Job).column_attrs if isinstance(attr.columns[0].type, JSON)
)


def _answered_columns() -> list[ColumnElement[Any]]:
    columns: list[ColumnElement[Any]] = []
    for attr in inspect(Job).column_attrs:
        if attr.key in NOT_ANSWERED:
            continue
        column = getattr(Job, attr.key)
        columns.append(cast(column, Text).label(attr.key) if attr.key in _JSON_COLUMNS else column)
    return columns


JOB_COLUMNS = _answered_columns()


class JobAnswers:
    """Each job's answer bytes with the row they were made from, the least recently used out first.

    Used from the thread pool (service/deps.py's reads), hence the lock; a bytes object made twice by
    two threads at once is harmless.
    """

    def __init__(self, max_jobs: int = MAX_JOBS) -> None:
        self._max_jobs = max_jobs
        self._kept: OrderedDict[str, tuple[tuple[Any, ...], bytes]] = OrderedDict()
        self._lock = Lock()

    def answer(self, row: SelectedRow, artifacts: Sequence[SelectedRow]) -> bytes:
        """The JSON of the JobObject for this row of JOB_COLUMNS and its artifact rows."""
        key = (tuple(row), tuple(tuple(artifact) for artifact in artifacts))
        with self._lock:
            kept = self._kept.get(row.id)
            if kept is not None and kept[0] == key:
                self._kept.move_to_end(row.id)
                return kept[1]
        answer = _made(row, artifacts)
        with self._lock:
            self._kept[row.id] = (key, answer)
            self._kept.move_to_end(row.id)
            while len(self._kept) > self._max_jobs:
                self._kept.popitem(last=False)
        return answer

    def __len__(self) -> int:
        return len(self._kept)


def _made(row: SelectedRow, artifacts: Sequence[SelectedRow]) -> bytes:
    # job_object makes it, from a Job and Artifacts never added to a session: one way a job object is
    # built, whether it is answered as bytes from here or as a model (a cancel, the event stream's end).
    values = {
        key: read_json(value) if key in _JSON_COLUMNS and value is not None else value
        for key, value in row._mapping.items()
    }
    job_artifacts = [Artifact(**artifact._mapping) for artifact in artifacts]
    obj: JobObject = job_object(Job(**values), job_artifacts)
    return obj.__pydantic_serializer__.to_json(obj, by_alias=True)


def artifact_object(artifact: Artifact) -> ArtifactObject:
    return ArtifactObject(
        name=artifact.name,
        bytes=artifact.bytes,
        sha256=artifact.sha256,
        created_at=unix_seconds(artifact.created_at),
        url=f"/v1/jobs/{quote(artifact.job_id)}/artifacts/{quote(artifact.name)}",
    )


def job_object(job: Job, artifacts: list[Artifact]) -> JobObject:
    spec = stored_spec(job)
    error = None
    if job.error_code is not None:
        error = JobError(code=job.error_code, message=job.error_message or "", param=job.error_param)
    return JobObject(
        id=job.id,
        status=JobStatus(job.status),
        base_model=job.base_model,
        method=spec.method,
        training_file=job.training_file_id,
        validation_file=job.validation_file_id,
        spec=spec,
        metadata=spec.metadata,
        created_at=unix_seconds(job.created_at),
        started_at=optional_unix_seconds(job.started_at),
        finished_at=optional_unix_seconds(job.finished_at),
        # OpenAI's meaning: an estimate only while the job runs (a finished job's is history, not news).
        estimated_finish=optional_unix_seconds(job.estimated_finish_at)
        if job.status == JobStatus.RUNNING
        else None,
        examples_seen=job.examples_seen,
        trained_tokens=job.trained_tokens,
        progress=min(max(job.progress, 0.0), 1.0),
        metrics=job.metrics or {},
        validation=job.validation,
        error=error,
        cancel_requested=job.cancel_requested,
        pause_requested=job.pause_requested and job.status == JobStatus.RUNNING,
        artifacts=[artifact_object(a) for a in artifacts] if job.status == JobStatus.SUCCEEDED else [],
        webhook_url=job.webhook_url,
    )


def page_answer(session: Session, rows: Sequence[SelectedRow], *, has_more: bool) -> bytes:
    """A JobList's JSON from rows of JOB_COLUMNS, each job's part kept or made by `job_answers`."""
    succeeded = [row.id for row in rows if row.status == JobStatus.SUCCEEDED]
    artifacts = artifact_rows(session, job_ids=succeeded)
    data = [orjson.Fragment(job_answers.answer(row, artifacts.get(row.id, ()))) for row in rows]
    # The fields in JobList's order: the same bytes FastAPI would write from a JobList.
    return orjson.dumps({"object": "list", "data": data, "has_more": has_more})


def job_answer(session: Session, row: SelectedRow) -> bytes:
    """One job's JSON from its row of JOB_COLUMNS, with its artifacts."""
    artifacts = artifact_rows(session, job_ids=[row.id]) if row.status == JobStatus.SUCCEEDED else {}
    return job_answers.answer(row, artifacts.get(row.id, ()))


def artifact_rows(session: Session, *, job_ids: Sequence[str]) -> dict[str, list[SelectedRow]]:
    """The artifact rows of many jobs in one query, by job, each job's in name order."""
    found: dict[str, list[SelectedRow]] = {job_id: [] for job_id in job_ids}
    if job_ids:
        query = select(*ARTIFACT_COLUMNS).where(Artifact.job_id.in_(job_ids)).order_by(Artifact.name)
        for artifact in session.execute(query):
            found[artifact.job_id].append(artifact)
    return found


job_answers = JobAnswers()
