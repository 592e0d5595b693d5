"""/v1/jobs/{id}/checkpoints: the checkpoints a job keeps while it trains, each a loadable artifact."""

import logging
from urllib.parse import quote

from fastapi import APIRouter, Response
from fastapi.responses import FileResponse, StreamingResponse
from sqlalchemy.orm import Session

from core.models import Checkpoint
from core.storage import Storage
from core.storage.keys import checkpoint_prefix, join
from service.crud import checkpoints as crud
from service.deps import CurrentOwner, SessionDep, StorageDep
from service.errors import ApiError, NotFound
from service.routes.jobs import owned_job
from service.schemas.checkpoints import CheckpointFile, CheckpointList, CheckpointObject
from service.schemas.common import error_responses, unix_seconds
from service.storage import stored_file_response, stream_tar_gz

logger = logging.getLogger(__name__)

router = APIRouter(
    prefix="/v1/jobs", tags=["checkpoints"], responses=error_responses(401, 404, 422, 500, 503)
)


def checkpoint_object(checkpoint: Checkpoint) -> CheckpointObject:
    base = f"/v1/jobs/{quote(checkpoint.job_id)}/checkpoints/{quote(checkpoint.id)}"
    return CheckpointObject(
        id=checkpoint.id,
        job_id=checkpoint.job_id,
        step=checkpoint.step,
        epoch=checkpoint.epoch,
        metrics=checkpoint.metrics or {},
        created_at=unix_seconds(checkpoint.created_at),
        bytes=checkpoint.bytes,
        files=[
            CheckpointFile(
                name=f["name"], bytes=f["bytes"], sha256=f["sha256"], url=f"{base}/files/{quote(f['name'])}"
            )
            for f in checkpoint.files
        ],
        archive_url=f"{base}/archive.tar.gz",
    )


@router.get("/{job_id}/checkpoints")
def list_checkpoints(job_id: str, owner: CurrentOwner, session: SessionDep) -> CheckpointList:
    """List the checkpoints a job keeps, oldest step first."""
    job = owned_job(session, owner.id, job_id)
    return CheckpointList(data=[checkpoint_object(c) for c in crud.list_checkpoints(session, job_id=job.id)])


@router.get(
    "/{job_id}/checkpoints/{checkpoint_id}/archive.tar.gz",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/gzip": {}}}},
)
def download_checkpoint_archive(
    job_id: str, checkpoint_id: str, owner: CurrentOwner, session: SessionDep, storage: StorageDep
) -> StreamingResponse:
    """Download a whole checkpoint as one .tar.gz, streamed; it loads like a job's artifact."""
    checkpoint = _owned_checkpoint(session, owner.id, job_id, checkpoint_id)
    members = [(f["name"], _stored_file(storage, checkpoint, f["name"])) for f in checkpoint.files]
    return StreamingResponse(
        stream_tar_gz(storage, members, root=checkpoint.id),
        media_type="application/gzip",
        headers={"Content-Disposition": f'attachment; filename="{checkpoint.id}.tar.gz"'},
    )


@router.get(
    "/{job_id}/checkpoints/{checkpoint_id}/files/{name:path}",
    response_class=FileResponse,
    responses={200: {"content": {"application/octet-stream": {}}}},
)
def download_checkpoint_file(
    job_id: str,
    checkpoint_id: str,
    name: str,
    owner: CurrentOwner,
    session: SessionDep,
    storage: StorageDep,
) -> Response:
    """Download one file of a checkpoint, streamed, its sha256 in `X-Content-SHA256`."""
    checkpoint = _owned_checkpoint(session, owner.id, job_id, checkpoint_id)
    # Looked up by exact name in the row: a client's name is never joined into a path unchecked.
    recorded = next((f for f in checkpoint.files if f["name"] == name), None)
    if recorded is None:
        raise NotFound(
            f"checkpoint {checkpoint_id!r} has no file named {name!r}", param="name", code="file_not_found"
        )
    key = _stored_file(storage, checkpoint, name)
    return stored_file_response(
        storage,
        key,
        media_type="application/octet-stream",
        filename=key.rsplit("/", 1)[-1],
        headers={"X-Content-SHA256": recorded["sha256"]},
    )


def _owned_checkpoint(session: Session, owner_id: str, job_id: str, checkpoint_id: str) -> Checkpoint:
    job = owned_job(session, owner_id, job_id)
    checkpoint = crud.get_checkpoint(session, job_id=job.id, checkpoint_id=checkpoint_id)
    if checkpoint is None:
        raise NotFound(
            f"job {job_id!r} has no checkpoint with id {checkpoint_id!r}",
            param="checkpoint_id",
            code="checkpoint_not_found",
        )
    return checkpoint


def _stored_file(storage: Storage, checkpoint: Checkpoint, name: str) -> str:
    # keys.join is a second guard: even a bad row stays inside the checkpoint's folder.
    key = join(checkpoint_prefix(checkpoint.job_id, checkpoint.id), name)
    if storage.stat(key) is None:
        # Storage lost a file the database says was kept: the server's fault, said plainly.
        logger.error("file %s of checkpoint %s is recorded but missing from storage", name, checkpoint.id)
        raise ApiError(
            f"file {name!r} of checkpoint {checkpoint.id!r} is missing from storage",
            status_code=500,
            code="checkpoint_file_missing",
        )
    return key
