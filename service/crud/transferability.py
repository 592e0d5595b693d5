"""Transferability runs: the rows behind /v1/transferability, always scoped to their owner."""

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.models import JobStatus, TransferabilityRun
from service.crud import storable
from service.crud.pages import newest_first_page
from tuning.spec.transferability import TransferabilityRequest


def create_run(
    session: Session, *, owner_id: str, request: TransferabilityRequest, queue: str
) -> TransferabilityRun:
    """Insert and COMMIT a queued run; only after this may it be sent to a worker."""
    run = TransferabilityRun(
        owner_id=owner_id, status=JobStatus.QUEUED, request=request.model_dump(mode="json"), queue=queue
    )
    session.add(run)
    session.commit()
    return run


def get_run(session: Session, *, owner_id: str, run_id: str) -> TransferabilityRun | None:
    if not storable(run_id):
        return None
    return session.scalar(
        select(TransferabilityRun).where(
            TransferabilityRun.id == run_id, TransferabilityRun.owner_id == owner_id
        )
    )


def list_runs(
    session: Session, *, owner_id: str, limit: int, after: TransferabilityRun | None = None
) -> tuple[list[TransferabilityRun], bool]:
    query = select(TransferabilityRun).where(TransferabilityRun.owner_id == owner_id)
    return newest_first_page(session, query, TransferabilityRun, limit=limit, after=after)
