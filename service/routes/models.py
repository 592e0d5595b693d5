"""/v1/models: the base models a worker can fine-tune, your finished jobs' models included."""

from datetime import datetime

from fastapi import APIRouter

from service.base_models import JobModel, job_models
from service.deps import CurrentOwner, SessionDep, SettingsDep
from service.errors import NotFound
from service.fine_tuned_models import job_id_of
from service.key_cache import AuthenticatedOwner
from service.schemas.common import error_responses, unix_seconds
from service.schemas.models import ModelList, ModelObject
from tuning.models import BaseModelInfo, list_base_models

router = APIRouter(prefix="/v1/models", tags=["models"], responses=error_responses(401, 422, 500, 503))

SYSTEM = "system"  # OpenAI's owned_by for the models a server offers everyone


# A plain def: FastAPI runs it in its thread pool, where reading model folders and the database may block.
@router.get("")
def list_models(owner: CurrentOwner, session: SessionDep, settings: SettingsDep) -> ModelList:
    """List the base models: bundled MiniLM, model directories, the Hugging Face cache, your jobs."""
    models = list_base_models(settings.model_dirs)
    by_id = {model.id: model for model in models}
    jobs = [
        _job_object(job, by_id.get(job.root_base_model), owner, job.job_id)
        for job in job_models(session, owner.id)
    ]
    # Paths stay on the server: they say nothing a client can use and reveal the host's layout.
    return ModelList(data=[_model_object(model) for model in models] + jobs)


@router.get("/{model_id:path}", responses=error_responses(404))
def retrieve_model(
    model_id: str, owner: CurrentOwner, session: SessionDep, settings: SettingsDep
) -> ModelObject:
    """Get one model: a base model's id, or a job's model by its id or its `fine_tuned_model` name."""
    models = list_base_models(settings.model_dirs)
    job_id = job_id_of(model_id)
    if job_id is not None:
        by_id = {model.id: model for model in models}
        for job in job_models(session, owner.id):
            if job.job_id == job_id:
                return _job_object(job, by_id.get(job.root_base_model), owner, model_id)
    else:
        for model in models:
            if model.id == model_id:
                return _model_object(model)
    raise NotFound(f"no model with id {model_id!r}", param="model", code="model_not_found")


def _model_object(model: BaseModelInfo) -> ModelObject:
    return ModelObject(
        id=model.id,
        created=_written_at(model),
        owned_by=SYSTEM,
        source=model.source,
        architecture=model.architecture,
        parameters=model.parameters,
        tasks=model.tasks,
    )


def _job_object(
    job: JobModel, root: BaseModelInfo | None, owner: AuthenticatedOwner, name: str
) -> ModelObject:
    """A job's model has its root base's shapes (a fresh head aside) and trains for the job's own task."""
    return ModelObject(
        id=name,
        created=unix_seconds(job.finished_at) if job.finished_at is not None else 0,
        owned_by=owner.id,
        source="job",
        architecture=root.architecture if root else None,
        parameters=root.parameters if root else None,
        tasks=[job.task],
    )


def _written_at(model: BaseModelInfo) -> int:
    """When the model's config was written: the nearest thing a folder of weights has to a date."""
    config = model.path / "config.json"
    try:
        return int(config.stat().st_mtime)
    except OSError:
        return int(datetime.now().timestamp())
