"""/v1/jobs: create a fine-tuning job, follow it, cancel it, download what it produced, delete it."""

import logging
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Query, Response
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from sqlalchemy.orm import Session

from core.models import ACTIVE, Job, JobEvent, JobStatus
from service.crud import job_rows
from service.crud import jobs as crud
from service.deps import CeleryDep, CurrentOwner, SessionDep, SettingsDep, StorageDep, read_in_thread
from service.errors import ApiError, Conflict, NotFound
from service.idempotency import JsonIdempotency, idempotent
from service.job_answers import artifact_object, job_answer, job_object, page_answer
from service.schemas.common import error_responses, unix_seconds
from service.schemas.jobs import (
    ArtifactList,
    DryRun,
    JobDeleted,
    JobEventList,
    JobEventObject,
    JobList,
    JobObject,
)
from service.storage import artifact_key, remove_job_objects, stored_file_response, stream_tar_gz
from service.submit import submit_job
from tuning.spec import JobRequest

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], responses=error_responses(401, 422, 500, 503))

Limit = Annotated[int, Query(ge=1, le=100, description="Page size.")]


def owned_job(session: Session, owner_id: str, job_id: str) -> Job:
    job = crud.get_job(session, owner_id=owner_id, job_id=job_id)
    if job is None:
        raise _no_job(job_id)
    return job


def _no_job(job_id: str) -> NotFound:
    return NotFound(f"no job with id {job_id!r}", param="job_id", code="job_not_found")


def full_job_object(session: Session, job: Job) -> JobObject:
    return job_object(job, crud.list_artifacts(session, job_id=job.id))


@router.post(
    "",
    status_code=201,
    response_model=JobObject,
    responses={
        **error_responses(400, 404, 409, 413, 415, 503),
        200: {"model": DryRun, "description": "dry_run: the report; nothing was queued."},
    },
)
def create_job(
    request: JobRequest,
    owner: CurrentOwner,
    session: SessionDep,
    settings: SettingsDep,
    celery: CeleryDep,
    idempotency: JsonIdempotency,
) -> Response:
    """Create a fine-tuning job: every check and the validation report first, then it is queued.

    With `"dry_run": true` nothing is created: the answer (200) is the report with the number of
    steps, tokens and an estimate of time and memory. With an `Idempotency-Key`, a retry of the
    same request answers the first response instead of creating a second job.
    """
    with idempotent(session, settings, owner_id=owner.id, request=idempotency) as call:
        if call.replay is not None:
            return call.replay
        created: list[Response] = []

        def keep_response(job: Job) -> None:
            # Recorded inside the job's transaction: the key's response exists exactly when the job does.
            created.append(call.record(JSONResponse(job_object(job, []).model_dump(mode="json"), 201)))

        submitted = submit_job(
            session, settings, celery, owner_id=owner.id, request=request, before_commit=keep_response
        )
        if isinstance(submitted, DryRun):
            return JSONResponse(submitted.model_dump(mode="json"))  # not kept: a dry run creates nothing
        return created[0]


# The two reads below answer bytes made by service/job_answers.py, which FastAPI sends as they are;
# `response_model` keeps the OpenAPI document as it was when they answered the models.
@router.get("", response_model=JobList, responses=error_responses(400))
async def list_jobs(
    owner: CurrentOwner,
    session: SessionDep,
    limit: Limit = 20,
    after: Annotated[str | None, Query(description="The last job id of the previous page.")] = None,
) -> Response:
    """List your jobs, newest first."""
    return await read_in_thread(session, job_page, owner.id, limit, after)


def job_page(session: Session, owner_id: str, limit: int, after: str | None) -> Response:
    cursor = None
    if after is not None:
        cursor = job_rows.position(session, owner_id=owner_id, job_id=after)
        if cursor is None:
            raise ApiError(f"after: no job with id {after!r}", param="after", code="invalid_cursor")
    rows, has_more = job_rows.job_rows(session, owner_id=owner_id, limit=limit, after=cursor)
    return Response(page_answer(session, rows, has_more=has_more), media_type="application/json")


@router.get("/{job_id}", response_model=JobObject, responses=error_responses(404))
async def get_job(job_id: str, owner: CurrentOwner, session: SessionDep) -> Response:
    """Get a job: status, progress, latest metrics, error and artifacts."""
    return await read_in_thread(session, owned_job_answer, owner.id, job_id)


def owned_job_answer(session: Session, owner_id: str, job_id: str) -> Response:
    row = job_rows.job_row(session, owner_id=owner_id, job_id=job_id)
    if row is None:
        raise _no_job(job_id)
    return Response(job_answer(session, row), media_type="application/json")


@router.post("/{job_id}/cancel", responses=error_responses(404, 409, 413))
def cancel_job(job_id: str, owner: CurrentOwner, session: SessionDep) -> JobObject:
    """Cancel a job: a queued or paused one never runs again, a running one stops within a few steps."""
    return full_job_object(session, cancel(session, owned_job(session, owner.id, job_id)))


@router.delete("/{job_id}", responses=error_responses(404, 409))
def delete_job(job_id: str, owner: CurrentOwner, session: SessionDep, storage: StorageDep) -> JobDeleted:
    """Delete a finished job with its events, artifact and checkpoints; refused while it is unfinished
    or another job needs it (builds on its model, or starts from its checkpoint)."""
    job = owned_job(session, owner.id, job_id)
    if job.status in ACTIVE:
        raise Conflict(
            f"job {job_id!r} is {job.status}; cancel it and wait for it to end first",
            param="job_id",
            code="job_not_finished",
        )
    needing = crud.jobs_needing(session, job=job)
    if needing:
        raise Conflict(
            f"job {job_id!r} is needed by job {needing[0].id!r} (its base model or checkpoint); "
            "delete that one first",
            param="job_id",
            code="job_in_use",
        )
    crud.delete_job(session, job=job)
    # After the commit: a crash in between leaves objects no row names, which a worker's sweep at its
    # start removes; never a row whose artifact is gone.
    remove_job_objects(storage, job_id)
    return JobDeleted(id=job_id, deleted=True)


def cancel(session: Session, job: Job) -> Job:
    """The job cancelled, or asked to stop; 409 once it has finished. (Also /v1/fine_tuning's cancel.)"""
    # The worker may change the status between our read and our write; each UPDATE is
    # conditional, so a lost race means re-reading and deciding again (at most a few times).
    for _ in range(3):
        if crud.cancel_job_not_started(session, job=job) or crud.request_cancel(session, job=job):
            break
        session.refresh(job)
        if job.status not in ACTIVE:
            raise Conflict(
                f"job {job.id!r} already {job.status}; it cannot be cancelled", code="job_finished"
            )
    session.refresh(job)
    return job


def event_object(event: JobEvent) -> JobEventObject:
    return JobEventObject(
        id=event.id,
        created_at=unix_seconds(event.created_at),
        level=event.level,
        type=event.type,
        message=event.message,
        data=event.data or {},
    )


@router.get("/{job_id}/events", responses=error_responses(404))
async def list_events(
    job_id: str,
    owner: CurrentOwner,
    session: SessionDep,
    limit: Limit = 20,
    after: Annotated[int | None, Query(description="The last event id already seen.")] = None,
) -> JobEventList:
    """List a job's events, oldest first: status changes, training metrics, evaluations."""
    return await read_in_thread(session, event_page, owner.id, job_id, limit, after)


def event_page(session: Session, owner_id: str, job_id: str, limit: int, after: int | None) -> JobEventList:
    job = owned_job(session, owner_id, job_id)
    events, has_more = crud.list_events(session, job_id=job.id, limit=limit, after=after)
    return JobEventList(data=[event_object(event) for event in events], has_more=has_more)


@router.get("/{job_id}/artifacts", responses=error_responses(404))
async def list_artifacts(job_id: str, owner: CurrentOwner, session: SessionDep) -> ArtifactList:
    """List the files a job published, with sizes and sha256."""
    return await read_in_thread(session, artifact_list, owner.id, job_id)


def artifact_list(session: Session, owner_id: str, job_id: str) -> ArtifactList:
    job = owned_job(session, owner_id, job_id)
    artifacts = crud.list_artifacts(session, job_id=job.id)
    return ArtifactList(
        data=[artifact_object(a) for a in artifacts], archive_url=f"/v1/jobs/{quote(job.id)}/artifacts.tar.gz"
    )


@router.get(
    "/{job_id}/artifacts.tar.gz",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/gzip": {}}}, **error_responses(404, 409)},
)
def download_archive(
    job_id: str, owner: CurrentOwner, session: SessionDep, storage: StorageDep
) -> StreamingResponse:
    """Download the whole artifact as one .tar.gz, streamed."""
    job = owned_job(session, owner.id, job_id)
    if job.status != JobStatus.SUCCEEDED:
        raise Conflict(
            f"job {job_id!r} is {job.status}; only a succeeded job has an artifact", code="job_not_succeeded"
        )
    members = [(a.name, artifact_key(job, a.name)) for a in crud.list_artifacts(session, job_id=job.id)]
    missing = [name for name, key in members if storage.stat(key) is None]
    if missing:
        raise _missing_artifact(job.id, missing[0])
    return StreamingResponse(
        stream_tar_gz(storage, members, root=job.id),
        media_type="application/gzip",
        headers={"Content-Disposition": f'attachment; filename="{job.id}.tar.gz"'},
    )


@router.get(
    "/{job_id}/artifacts/{name:path}",
    response_class=FileResponse,
    responses={200: {"content": {"application/octet-stream": {}}}, **error_responses(404)},
)
def download_artifact(
    job_id: str, name: str, owner: CurrentOwner, session: SessionDep, storage: StorageDep
) -> Response:
    """Download one artifact file, streamed, its sha256 in `X-Content-SHA256`."""
    job = owned_job(session, owner.id, job_id)
    # Looked up by exact name in the table: a client's name is never joined into a path unchecked.
    artifact = crud.get_artifact(session, job_id=job.id, name=name)
    if artifact is None:
        raise NotFound(
            f"job {job_id!r} has no artifact named {name!r}", param="name", code="artifact_not_found"
        )
    key = artifact_key(job, artifact.name)
    if storage.stat(key) is None:
        raise _missing_artifact(job.id, artifact.name)
    return stored_file_response(
        storage,
        key,
        media_type="application/octet-stream",
        filename=key.rsplit("/", 1)[-1],
        headers={"X-Content-SHA256": artifact.sha256},
    )


def _missing_artifact(job_id: str, name: str) -> ApiError:
    # Storage lost a file the database says was published: the server's fault, said plainly.
    logger.error("artifact %s of job %s is recorded but missing from storage", name, job_id)
    return ApiError(
        f"artifact {name!r} of job {job_id!r} is missing from storage",
        status_code=500,
        code="artifact_missing",
    )
