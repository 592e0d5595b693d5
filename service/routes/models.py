"""/v1/models: the base models a worker can fine-tune."""

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from service.deps import CurrentOwner, SettingsDep
from service.schemas import ModelList, ModelObject, error_responses
from tuning.models import list_base_models

router = APIRouter(prefix="/v1/models", tags=["models"], responses=error_responses(401, 500))


@router.get("")
async def list_models(owner: CurrentOwner, settings: SettingsDep) -> ModelList:
    """List the base models: the bundled MiniLM, model directories and the local Hugging Face cache."""
    models = await run_in_threadpool(list_base_models, settings.model_dirs)
    # Paths stay on the server: they say nothing a client can use and reveal the host's layout.
    return ModelList(
        data=[
            ModelObject(id=model.id, source=model.source, architecture=model.architecture) for model in models
        ]
    )
