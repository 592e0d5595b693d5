"""Checkpoints kept while a job trains: the rows behind /v1/jobs/{id}/checkpoints."""

from sqlalchemy.orm import Session

from service.errors import ApiError
from tuning.spec import JobSpec


def check_from_checkpoint(session: Session, owner_id: str, spec: JobSpec) -> None:
    """Refuse a `from_checkpoint` that is not the owner's, or does not fit the job's base and method."""
    if spec.from_checkpoint is not None:
        raise ApiError("from_checkpoint is not available yet", param="from_checkpoint", code="not_available")
