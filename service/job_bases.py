"""Which base model a job builds on: a catalogue model, or a finished job's model (chains of transfer).

`resolve_base` returns the spec as it will be stored (EWC's Fisher file defaults to the source
job's training file) and the directory whose config.json the model checks read.
"""

from pathlib import Path

from sqlalchemy.orm import Session

from service.errors import ApiError
from service.settings import Settings
from tuning.errors import ModelNotFound
from tuning.models import resolve_base_model
from tuning.spec import JobSpec


def resolve_base(session: Session, owner_id: str, spec: JobSpec, settings: Settings) -> tuple[JobSpec, Path]:
    try:
        base_path = resolve_base_model(spec.base_model, settings.model_dirs)
    except ModelNotFound as error:
        raise ApiError(error.message, param="base_model", code="model_not_found") from None
    if spec.regularizers.ewc is not None and spec.regularizers.ewc.fisher_file is None:
        raise ApiError(
            "regularizers.ewc.fisher_file: give the source-task file the Fisher information is estimated "
            "on (it defaults to the source job's training file only when base_model is a finished job)",
            param="regularizers.ewc.fisher_file",
            code="missing_fisher_file",
            status_code=422,
        )
    return spec, base_path
