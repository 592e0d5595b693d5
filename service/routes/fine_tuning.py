"""/v1/fine_tuning/jobs: OpenAI's fine-tuning API over deltatune's own jobs, so the official `openai`
SDK works unmodified (`base_url=<server>/v1`, an API key).

A thin translation: each route calls what /v1/jobs calls (service.submit, service.crud.jobs, the
cancel and pause functions) and answers in OpenAI's shapes: its object names and fields, its cursor
pages (newest first, `after` an id of the previous page), its statuses, its error body. A job made
here is listed by /v1/jobs and the other way round.
"""

from typing import Annotated

from fastapi import APIRouter, Query, Response
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session

from core.models import Checkpoint, Job, JobEvent, JobStatus
from core.settings import Settings
from service.crud import checkpoints as checkpoint_crud
from service.crud import jobs as crud
from service.deps import CeleryDep, CurrentOwner, SessionDep, SettingsDep
from service.errors import ApiError
from service.fine_tuned_models import checkpoint_model, fine_tuned_model
from service.idempotency import JsonIdempotency, idempotent
from service.key_cache import AuthenticatedOwner
from service.openai_spec import job_request, learning_rate_multiplier
from service.pausing import pause_job, resume_job
from service.result_files import result_files
from service.routes.jobs import cancel, owned_job
from service.schemas.common import error_responses, optional_unix_seconds, unix_seconds
from service.schemas.fine_tuning import (
    CheckpointMetrics,
    FineTuningJob,
    FineTuningJobCheckpoint,
    FineTuningJobCheckpointList,
    FineTuningJobCreate,
    FineTuningJobEvent,
    FineTuningJobEventList,
    FineTuningJobList,
    JobError,
    JobHyperparameters,
    JobMethod,
    JobSupervised,
)
from service.submit import submit_job
from tuning.spec import JobSpec

# Invalid requests answer 400 here, as OpenAI's do (service.errors); 422 is declared only so that
# FastAPI documents no HTTPValidationError shape of its own.
router = APIRouter(
    prefix="/v1/fine_tuning/jobs",
    tags=["fine_tuning"],
    responses=error_responses(400, 401, 404, 422, 500, 503),
)

Limit = Annotated[int, Query(ge=1, le=100, description="Page size.")]
EVENT_PREFIX = "ftevent-"
# deltatune's event levels and types in OpenAI's words.
LEVELS = {"warning": "warn", "warn": "warn", "error": "error"}


def openai_job(session: Session, settings: Settings, job: Job, owner: AuthenticatedOwner) -> FineTuningJob:
    spec = JobSpec.model_validate(job.spec)
    hp = spec.hyperparameters
    hyperparameters = JobHyperparameters(
        batch_size=hp.batch_size,
        learning_rate_multiplier=learning_rate_multiplier(spec),
        n_epochs=hp.epochs,
    )
    error = None
    if job.error_code is not None:
        error = JobError(code=job.error_code, message=job.error_message or "", param=job.error_param)
    finished = job.status in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)
    return FineTuningJob(
        id=job.id,
        created_at=unix_seconds(job.created_at),
        error=error,
        estimated_finish=optional_unix_seconds(job.estimated_finish_at)
        if job.status == JobStatus.RUNNING
        else None,
        fine_tuned_model=fine_tuned_model(job, owner.name),
        finished_at=optional_unix_seconds(job.finished_at),
        hyperparameters=hyperparameters,
        model=job.base_model,
        organization_id=owner.id,
        result_files=result_files(session, settings, job),
        seed=hp.seed,
        status=job.status,  # type: ignore[arg-type]
        trained_tokens=job.trained_tokens if finished else None,
        training_file=job.training_file_id,
        validation_file=job.validation_file_id,
        metadata=spec.metadata or None,
        method=JobMethod(supervised=JobSupervised(hyperparameters=hyperparameters)),
        spec=spec.model_dump(mode="json"),
    )


@router.post("", response_model=FineTuningJob, responses=error_responses(409, 413, 415))
def create_fine_tuning_job(
    body: FineTuningJobCreate,
    owner: CurrentOwner,
    session: SessionDep,
    settings: SettingsDep,
    celery: CeleryDep,
    idempotency: JsonIdempotency,
) -> Response:
    """Create a fine-tuning job (OpenAI's request; deltatune's spec parts may stand beside it)."""
    with idempotent(session, settings, owner_id=owner.id, request=idempotency) as call:
        if call.replay is not None:
            return call.replay
        created: list[Response] = []

        def keep_response(job: Job) -> None:
            answer = openai_job(session, settings, job, owner).model_dump(mode="json")
            created.append(call.record(JSONResponse(answer, 200)))

        try:
            request = job_request(session, settings, owner.id, body)
            submit_job(
                session, settings, celery, owner_id=owner.id, request=request, before_commit=keep_response
            )
        except ApiError as error:
            raise _in_openai_words(error) from None
        return created[0]


@router.get("")
def list_fine_tuning_jobs(
    owner: CurrentOwner,
    session: SessionDep,
    settings: SettingsDep,
    limit: Limit = 20,
    after: Annotated[str | None, Query(description="The last job id of the previous page.")] = None,
) -> FineTuningJobList:
    """List your fine-tuning jobs, newest first."""
    cursor = None
    if after is not None:
        cursor = crud.get_job(session, owner_id=owner.id, job_id=after)
        if cursor is None:
            raise ApiError(f"after: no job with id {after!r}", param="after", code="invalid_cursor")
    jobs, has_more = crud.list_jobs(session, owner_id=owner.id, limit=limit, after=cursor)
    return FineTuningJobList(
        data=[openai_job(session, settings, job, owner) for job in jobs], has_more=has_more
    )


@router.get("/{job_id}")
def retrieve_fine_tuning_job(
    job_id: str, owner: CurrentOwner, session: SessionDep, settings: SettingsDep
) -> FineTuningJob:
    """Get a fine-tuning job."""
    return openai_job(session, settings, owned_job(session, owner.id, job_id), owner)


@router.post("/{job_id}/cancel", responses=error_responses(409, 413))
def cancel_fine_tuning_job(
    job_id: str, owner: CurrentOwner, session: SessionDep, settings: SettingsDep
) -> FineTuningJob:
    """Cancel a job: a queued or paused one at once, a running one within a few steps."""
    job = cancel(session, owned_job(session, owner.id, job_id))
    return openai_job(session, settings, job, owner)


@router.post("/{job_id}/pause", responses=error_responses(409, 413))
def pause_fine_tuning_job(
    job_id: str, owner: CurrentOwner, session: SessionDep, settings: SettingsDep
) -> FineTuningJob:
    """Pause a job: a queued one at once; a running one keeps a resume point at its next step and stops."""
    job = pause_job(session, owned_job(session, owner.id, job_id))
    return openai_job(session, settings, job, owner)


@router.post("/{job_id}/resume", responses=error_responses(409, 413))
def resume_fine_tuning_job(
    job_id: str,
    owner: CurrentOwner,
    session: SessionDep,
    settings: SettingsDep,
    celery: CeleryDep,
) -> FineTuningJob:
    """Resume a paused job: queued again, it goes on from its resume point."""
    job = resume_job(session, celery, owned_job(session, owner.id, job_id))
    return openai_job(session, settings, job, owner)


def openai_event(event: JobEvent) -> FineTuningJobEvent:
    return FineTuningJobEvent(
        id=f"{EVENT_PREFIX}{event.id}",
        created_at=unix_seconds(event.created_at),
        level=LEVELS.get(event.level, "info"),  # type: ignore[arg-type]
        message=event.message,
        data=event.data or {},
        # Evaluations are metrics too in OpenAI's words; status changes are messages.
        type="metrics" if event.type in ("metrics", "eval") else "message",
    )


@router.get("/{job_id}/events")
def list_fine_tuning_events(
    job_id: str,
    owner: CurrentOwner,
    session: SessionDep,
    limit: Limit = 20,
    after: Annotated[str | None, Query(description="The last event id of the previous page.")] = None,
) -> FineTuningJobEventList:
    """List a job's events, newest first."""
    job = owned_job(session, owner.id, job_id)
    before = None if after is None else _event_number(after)
    events, has_more = crud.list_events_newest_first(session, job_id=job.id, limit=limit, before=before)
    return FineTuningJobEventList(data=[openai_event(event) for event in events], has_more=has_more)


def _event_number(after: str) -> int:
    number = after.removeprefix(EVENT_PREFIX)
    if not number.isascii() or not number.isdigit() or len(number) > 18:
        raise ApiError(
            f"after: {after!r} is not an event id (ftevent-<number>)", param="after", code="invalid_cursor"
        )
    return int(number)


def openai_checkpoint(
    checkpoint: Checkpoint, job: Job, owner: AuthenticatedOwner, train_loss: dict[int, float]
) -> FineTuningJobCheckpoint:
    metrics = checkpoint.metrics or {}
    valid_loss = metrics.get("val_loss")
    valid_accuracy = metrics.get("val_token_accuracy", metrics.get("val_accuracy"))
    return FineTuningJobCheckpoint(
        id=checkpoint.id,
        created_at=unix_seconds(checkpoint.created_at),
        fine_tuned_model_checkpoint=checkpoint_model(job, owner.name, checkpoint.step),
        fine_tuning_job_id=job.id,
        # deltatune evaluates the whole validation file: valid and full_valid are the same figures.
        metrics=CheckpointMetrics(
            step=checkpoint.step,
            train_loss=train_loss.get(checkpoint.step),
            valid_loss=valid_loss,
            valid_mean_token_accuracy=valid_accuracy,
            full_valid_loss=valid_loss,
            full_valid_mean_token_accuracy=valid_accuracy,
        ),
        step_number=checkpoint.step,
    )


@router.get("/{job_id}/checkpoints")
def list_fine_tuning_checkpoints(
    job_id: str,
    owner: CurrentOwner,
    session: SessionDep,
    limit: Limit = 10,
    after: Annotated[str | None, Query(description="The last checkpoint id of the previous page.")] = None,
) -> FineTuningJobCheckpointList:
    """List a job's kept checkpoints, latest step first."""
    job = owned_job(session, owner.id, job_id)
    cursor = None
    if after is not None:
        cursor = checkpoint_crud.get_checkpoint(session, job_id=job.id, checkpoint_id=after)
        if cursor is None:
            raise ApiError(f"after: no checkpoint with id {after!r}", param="after", code="invalid_cursor")
    checkpoints, has_more = checkpoint_crud.list_checkpoints_newest_first(
        session, job_id=job.id, limit=limit, after=cursor
    )
    losses = _train_losses(session, job.id, [c.step for c in checkpoints])
    data = [openai_checkpoint(c, job, owner, losses) for c in checkpoints]
    return FineTuningJobCheckpointList(
        data=data,
        has_more=has_more,
        first_id=data[0].id if data else None,
        last_id=data[-1].id if data else None,
    )


def _train_losses(session: Session, job_id: str, steps: list[int]) -> dict[int, float]:
    """The train loss logged at each of `steps` (a metrics event names its step)."""
    wanted, found = set(steps), {}
    for event in crud.metrics_events(session, job_id=job_id):
        step, loss = (event.data or {}).get("step"), (event.data or {}).get("train_loss")
        if step in wanted and isinstance(loss, int | float):
            found[step] = float(loss)
    return found


def _in_openai_words(error: ApiError) -> ApiError:
    """A submission's error as this surface names things: `model` for base_model, and 400 for a
    request deltatune cannot train (OpenAI's API answers every invalid request 400)."""
    param, message = error.param, error.message
    if param is not None and param.startswith("base_model"):
        param = "model" + param.removeprefix("base_model")
        message = message.replace("base_model", "model", 1)
    status = 400 if error.status_code == 422 else error.status_code
    return ApiError(message, param=param, code=error.code, status_code=status, headers=error.headers)
