"""/v1/transferability: score candidate base models on a training file before fine-tuning, on a worker."""

import logging
from typing import Annotated

from fastapi import APIRouter, Query

from core.dispatch import enqueue_transferability
from core.models import TransferabilityRun
from core.settings import Settings
from service.crud import transferability as crud
from service.deps import CeleryDep, CurrentOwner, SessionDep, SettingsDep
from service.errors import ApiError, NotFound
from service.schemas.common import error_responses, optional_unix_seconds, unix_seconds
from service.schemas.transferability import (
    CandidateScore,
    TransferabilityError,
    TransferabilityList,
    TransferabilityObject,
)
from service.usable_files import check_data_file
from tuning.errors import ModelNotFound
from tuning.models import resolve_base_model
from tuning.spec.transferability import TransferabilityRequest

logger = logging.getLogger(__name__)

router = APIRouter(
    prefix="/v1/transferability", tags=["transferability"], responses=error_responses(401, 422, 500, 503)
)

Limit = Annotated[int, Query(ge=1, le=100, description="Page size.")]


def run_object(run: TransferabilityRun) -> TransferabilityObject:
    request = TransferabilityRequest.model_validate(run.request)
    error = None
    if run.error_code is not None:
        error = TransferabilityError(code=run.error_code, message=run.error_message or "")
    seconds = None
    if run.started_at is not None and run.finished_at is not None:
        seconds = round((run.finished_at - run.started_at).total_seconds(), 3)
    return TransferabilityObject(
        id=run.id,
        status=run.status,  # type: ignore[arg-type]  # the worker writes only RunStatus values
        training_file=request.training_file,
        base_models=request.base_models,
        task=request.task,
        max_examples=request.max_examples,
        created_at=unix_seconds(run.created_at),
        started_at=optional_unix_seconds(run.started_at),
        finished_at=optional_unix_seconds(run.finished_at),
        seconds=seconds,
        # The worker stores them ranked, best first.
        results=[CandidateScore.model_validate(result) for result in run.results or []],
        error=error,
    )


@router.post("", status_code=201, responses=error_responses(400, 413, 415))
def create_run(
    request: TransferabilityRequest,
    owner: CurrentOwner,
    session: SessionDep,
    settings: SettingsDep,
    celery: CeleryDep,
) -> TransferabilityObject:
    """Score each candidate base model on a training file without fine-tuning; runs on a worker."""
    check_data_file(session, owner.id, request.training_file, "training_file")
    check_base_models(settings, request.base_models)
    run = crud.create_run(session, owner_id=owner.id, request=request, queue=settings.job_queue)
    # Only after COMMIT: a worker that receives the id must find the row.
    try:
        enqueue_transferability(celery, run.id, run.queue)
    except Exception:
        # The run stays queued and is not lost: workers re-send queued runs when they start.
        logger.exception("could not reach the broker for transferability run %s; it stays queued", run.id)
    return run_object(run)


def check_base_models(settings: Settings, base_models: list[str]) -> None:
    for index, name in enumerate(base_models):
        try:
            resolve_base_model(name, settings.model_dirs)
        except ModelNotFound as error:
            param = f"base_models[{index}]"
            raise ApiError(f"{param}: {error.message}", param=param, code="model_not_found") from None


@router.get("", responses=error_responses(400))
def list_runs(
    owner: CurrentOwner,
    session: SessionDep,
    limit: Limit = 20,
    after: Annotated[str | None, Query(description="The last run id of the previous page.")] = None,
) -> TransferabilityList:
    """List your transferability runs, newest first."""
    cursor = None
    if after is not None:
        cursor = crud.get_run(session, owner_id=owner.id, run_id=after)
        if cursor is None:
            raise ApiError(
                f"after: no transferability run with id {after!r}", param="after", code="invalid_cursor"
            )
    runs, has_more = crud.list_runs(session, owner_id=owner.id, limit=limit, after=cursor)
    return TransferabilityList(data=[run_object(run) for run in runs], has_more=has_more)


@router.get("/{run_id}", responses=error_responses(404))
def get_run(run_id: str, owner: CurrentOwner, session: SessionDep) -> TransferabilityObject:
    """Get a run: its status, timings and, once succeeded, each candidate's score, best first."""
    run = crud.get_run(session, owner_id=owner.id, run_id=run_id)
    if run is None:
        raise NotFound(f"no transferability run with id {run_id!r}", param="run_id", code="run_not_found")
    return run_object(run)
