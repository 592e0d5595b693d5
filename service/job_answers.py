"""A job's JSON answer as bytes, kept by each API process while the job's row stays the same.

A page of `GET /v1/jobs` is 20 jobs, and building each JobObject (pydantic validates every field)
and serialising it was most of a page's CPU, though few jobs change between two pages. So each job's
bytes are kept beside the exact column values, and artifact rows, they were made from
(service/crud/job_rows.py reads them); a job read again with the same values gets the same bytes
back, and any difference makes them anew. The key is the data itself: no write anywhere (a worker's
progress, a cancel, a delete, another API process) has to invalidate anything, and an answer cannot
go stale.
"""

from collections import OrderedDict
from collections.abc import Sequence
from threading import Lock
from types import SimpleNamespace
from typing import Any
from urllib.parse import quote

import orjson
from sqlalchemy.orm import Session

from core.db import read_json
from core.models import Artifact, Job, JobStatus
from service.crud import job_rows
from service.crud.job_rows import SelectedRow
from service.schemas.common import optional_unix_seconds, unix_seconds
from service.schemas.jobs import ArtifactObject, JobError, JobObject
from service.stored_specs import stored_spec

MAX_JOBS = 4096


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
    # job_object makes it, as it makes the models other routes answer (a cancel, the event stream's
    # end): from plain namespaces of the row's values, which it reads as it reads a Job and Artifacts
    # (a transient Job instead took as long to build as the answer).
    values = {
        key: read_json(value) if key in job_rows.JSON_COLUMNS and value is not None else value
        for key, value in row._mapping.items()
    }
    job_artifacts = [SimpleNamespace(**artifact._mapping) for artifact in artifacts]
    obj = job_object(SimpleNamespace(**values), job_artifacts)
    return obj.__pydantic_serializer__.to_json(obj, by_alias=True)


def artifact_object(artifact: Artifact | SimpleNamespace) -> ArtifactObject:
    return ArtifactObject(
        name=artifact.name,
        bytes=artifact.bytes,
        sha256=artifact.sha256,
        created_at=unix_seconds(artifact.created_at),
        url=f"/v1/jobs/{quote(artifact.job_id)}/artifacts/{quote(artifact.name)}",
    )


def job_object(job: Job | SimpleNamespace, artifacts: Sequence[Artifact | SimpleNamespace]) -> JobObject:
    spec = stored_spec(job.id, job.spec)
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
    artifacts = job_rows.artifact_rows(session, job_ids=succeeded)
    data = [orjson.Fragment(job_answers.answer(row, artifacts.get(row.id, ()))) for row in rows]
    # The fields in JobList's order: the same bytes FastAPI would write from a JobList.
    return orjson.dumps({"object": "list", "data": data, "has_more": has_more})


def job_answer(session: Session, row: SelectedRow) -> bytes:
    """One job's JSON from its row of JOB_COLUMNS, with its artifacts."""
    artifacts = job_rows.artifact_rows(session, job_ids=[row.id]) if row.status == JobStatus.SUCCEEDED else {}
    return job_answers.answer(row, artifacts.get(row.id, ()))


job_answers = JobAnswers()
