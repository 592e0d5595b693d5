"""/v1/models: the base models a worker can fine-tune, your finished jobs' models included."""

from fastapi import APIRouter

from service.base_models import JobModel, job_models
from service.deps import CurrentOwner, SessionDep, SettingsDep
from service.schemas.common import error_responses
from service.schemas.models import ModelList, ModelObject
from tuning.models import BaseModelInfo, list_base_models

router = APIRouter(prefix="/v1/models", tags=["models"], responses=error_responses(401, 500, 503))


# A plain def: FastAPI runs it in its thread pool, where reading model folders and the database may block.
@router.get("")
def list_models(owner: CurrentOwner, session: SessionDep, settings: SettingsDep) -> ModelList:
    """List the base models: bundled MiniLM, model directories, the Hugging Face cache, your jobs."""
    models = list_base_models(settings.model_dirs)
    by_id = {model.id: model for model in models}
    jobs = [_job_object(job, by_id.get(job.root_base_model)) for job in job_models(session, owner.id)]
    # Paths stay on the server: they say nothing a client can use and reveal the host's layout.
    return ModelList(data=[_model_object(model) for model in models] + jobs)


def _model_object(model: BaseModelInfo) -> ModelObject:
    return ModelObject(
        id=model.id,
        source=model.source,
        architecture=model.architecture,
        parameters=model.parameters,
        tasks=model.tasks,
    )


def _job_object(job: JobModel, root: BaseModelInfo | None) -> ModelObject:
    """A job's model has its root base's shapes (a fresh head aside) and trains for the job's own task."""
    return ModelObject(
        id=job.job_id,
        source="job",
        architecture=root.architecture if root else None,
        parameters=root.parameters if root else None,
        tasks=[job.task],
    )
