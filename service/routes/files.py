"""/v1/files: upload JSONL data (validated line by line), list, read, download and delete it."""

import logging
from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import FileResponse, JSONResponse
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from core.models import ACTIVE, File, new_id
from core.settings import Settings
from core.storage import Storage
from core.storage.keys import file_key
from service.crud import files as crud
from service.deps import CurrentOwner, SessionDep, SettingsDep, StorageDep, read_in_thread
from service.errors import ApiError, Conflict, NotFound
from service.idempotency import IdempotentRequest, KeyHeader, idempotent, request_hash
from service.schemas.common import error_responses, unix_seconds
from service.schemas.files import FileDeleted, FileList, FileObject
from service.storage import (
    ReceivedUpload,
    publish_upload,
    receive_upload,
    remove_upload,
    stored_file_response,
)
from tuning.data import validate_file
from tuning.errors import DataError

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/files", tags=["files"], responses=error_responses(401, 422, 500, 503))

PURPOSES = ("fine-tune",)
UPLOAD_FORMATS = (
    "JSONL, one object per line, every line in the first line's format: "
    '{"text", "label"} classification (a string or integer label; non-integer numbers make it '
    'regression), {"text", "labels": [...]} multi-label, {"text"} language modelling, '
    '{"prompt", "completion"} prompt/completion, '
    '{"messages": [{"role", "content"}, ...]} chat (roles system, user, assistant, tool; '
    "at least one assistant turn). UTF-8; the first bad line is answered with its number and reason."
)
UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file", "purpose"],
                    "properties": {
                        "file": {
                            "type": "string",
                            "format": "binary",
                            "description": UPLOAD_FORMATS,
                        },
                        "purpose": {"type": "string", "enum": list(PURPOSES)},
                    },
                }
            }
        },
    }
}


def file_object(file: File) -> FileObject:
    return FileObject(
        id=file.id,
        filename=file.filename,
        purpose=file.purpose,
        bytes=file.bytes,
        created_at=unix_seconds(file.created_at),
        status=file.status,  # type: ignore[arg-type]
        status_details=file.status_details,
        sha256=file.sha256,
        examples=file.examples,
        format=file.format,
    )


def owned_file(session: Session, owner_id: str, file_id: str) -> File:
    file = crud.get_file(session, owner_id=owner_id, file_id=file_id)
    if file is None:
        raise NotFound(f"no file with id {file_id!r}", param="file_id", code="file_not_found")
    return file


@router.post(
    "",
    status_code=201,
    response_model=FileObject,
    openapi_extra=UPLOAD_BODY,
    responses=error_responses(400, 409, 413, 415, 507),
)
async def upload_file(
    request: Request,
    owner: CurrentOwner,
    session: SessionDep,
    settings: SettingsDep,
    storage: StorageDep,
    idempotency_key: KeyHeader = None,
) -> Response:
    """Upload a JSONL file (multipart `file` and `purpose`); every line is validated.

    With an `Idempotency-Key`, a retry of the same upload (same file bytes and fields) answers the
    first response instead of storing the file twice.
    """
    upload = await receive_upload(request, file_field="file", text_fields=("purpose",), settings=settings)
    try:
        purpose = upload.fields.get("purpose")
        if purpose not in PURPOSES:
            raise ApiError(
                f"purpose must be one of {list(PURPOSES)}, got {purpose!r}",
                param="purpose",
                code="invalid_purpose",
            )
        keyed = None if idempotency_key is None else _upload_request(request, idempotency_key, upload)
        return await run_in_threadpool(
            _store_upload, session, settings, storage, owner.id, upload, purpose, keyed
        )
    finally:
        remove_upload(upload)  # already gone when the upload was stored


def _upload_request(request: Request, key: str, upload: ReceivedUpload) -> IdempotentRequest:
    # The file's bytes were hashed while they streamed in; the fields and the name make the rest.
    fields = [f"{name}={value}" for name, value in sorted(upload.fields.items())]
    hashed = request_hash(request.method, request.url.path, [upload.sha256, upload.filename, *fields])
    return IdempotentRequest(f"POST {request.url.path}", key, hashed)


def _store_upload(
    session: Session,
    settings: Settings,
    storage: Storage,
    owner_id: str,
    upload: ReceivedUpload,
    purpose: str,
    keyed: IdempotentRequest | None,
) -> Response:
    with idempotent(session, settings, owner_id=owner_id, request=keyed) as call:
        if call.replay is not None:
            return call.replay
        created: list[Response] = []

        def keep_response(file: File) -> None:
            # In the File row's transaction: the key's response exists exactly when the file does.
            created.append(call.record(JSONResponse(file_object(file).model_dump(mode="json"), 201)))

        file = _register_upload(session, storage, owner_id, upload, purpose, keep_response)
        if file.status == crud.ERROR:
            raise ApiError(
                file.status_details or "invalid file", status_code=422, param="file", code="invalid_file"
            )
        return created[0]


def _register_upload(
    session: Session,
    storage: Storage,
    owner_id: str,
    upload: ReceivedUpload,
    purpose: str,
    before_commit: Callable[[File], None],
) -> File:
    """Validate every line; store a good file as files/<id>, record a bad one as `error` without a blob."""
    file = File(
        id=new_id("file"),
        owner_id=owner_id,
        filename=upload.filename,
        purpose=purpose,
        bytes=upload.bytes,
        sha256=upload.sha256,
    )
    try:
        report = validate_file(upload.path)
    except DataError as error:
        # The refused file stays listable with its reason, so a client can see why later.
        file.status, file.status_details = crud.ERROR, str(error)
        session.add(file)
        session.commit()
        return file
    file.status, file.examples, file.format = crud.PROCESSED, report.examples, report.format
    # Stored before its row: a crash between the two leaves a blob no row names (and no client sees),
    # never a row without its blob.
    stored = publish_upload(upload, storage, file.id)
    try:
        session.add(file)
        session.flush()
        before_commit(file)
        session.commit()
    except BaseException:
        storage.remove(stored)  # no row, no blob
        raise
    logger.info("stored file %s (%d bytes, %d examples)", file.id, file.bytes, report.examples)
    return file


@router.get("", responses=error_responses(400))
async def list_files(
    owner: CurrentOwner,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    after: Annotated[str | None, Query(description="The last file id of the previous page.")] = None,
) -> FileList:
    """List your files, newest first."""
    return await read_in_thread(session, file_page, owner.id, limit, after)


def file_page(session: Session, owner_id: str, limit: int, after: str | None) -> FileList:
    cursor = None
    if after is not None:
        cursor = crud.get_file(session, owner_id=owner_id, file_id=after)
        if cursor is None:
            raise ApiError(f"after: no file with id {after!r}", param="after", code="invalid_cursor")
    files, has_more = crud.list_files(session, owner_id=owner_id, limit=limit, after=cursor)
    return FileList(data=[file_object(file) for file in files], has_more=has_more)


@router.get("/{file_id}", responses=error_responses(404))
async def get_file(file_id: str, owner: CurrentOwner, session: SessionDep) -> FileObject:
    """Get one file's status, size, checksum and example count."""
    return await read_in_thread(session, owned_file_object, owner.id, file_id)


def owned_file_object(session: Session, owner_id: str, file_id: str) -> FileObject:
    return file_object(owned_file(session, owner_id, file_id))


@router.get(
    "/{file_id}/content",
    response_class=FileResponse,
    responses={200: {"content": {"application/jsonl": {}}}, **error_responses(404, 409)},
)
def download_file(file_id: str, owner: CurrentOwner, session: SessionDep, storage: StorageDep) -> Response:
    """Download a processed file's content, streamed."""
    file = owned_file(session, owner.id, file_id)
    if file.status != crud.PROCESSED:
        raise Conflict(f"file {file_id!r} has no content: {file.status_details}", code="file_not_ready")
    headers = {"X-Content-SHA256": file.sha256} if file.sha256 else None
    return stored_file_response(
        storage, file_key(file.id), media_type="application/jsonl", filename=file.filename, headers=headers
    )


@router.delete("/{file_id}", responses=error_responses(404, 409))
def delete_file(file_id: str, owner: CurrentOwner, session: SessionDep, storage: StorageDep) -> FileDeleted:
    """Delete a file; refused while a queued or running job uses it."""
    file = owned_file(session, owner.id, file_id)
    active = [job for job in crud.jobs_using_file(session, file_id=file.id) if job.status in ACTIVE]
    if active:
        raise Conflict(
            f"file {file_id!r} is used by job {active[0].id!r}, which is {active[0].status}",
            param="file_id",
            code="file_in_use",
        )
    crud.delete_file(session, file=file)
    storage.remove(file_key(file_id))  # after the row: a crash between leaves a blob nothing names
    return FileDeleted(id=file_id, deleted=True)
