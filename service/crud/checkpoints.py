"""Checkpoints kept while a job trains: the rows behind /v1/jobs/{id}/checkpoints, scoped through the job."""

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.models import Checkpoint, Job
from service.crud import storable


def list_checkpoints(session: Session, *, job_id: str) -> list[Checkpoint]:
    """The job's kept checkpoints, oldest step first (the caller has checked the job is the owner's)."""
    query = select(Checkpoint).where(Checkpoint.job_id == job_id).order_by(Checkpoint.step)
    return list(session.scalars(query))


def get_checkpoint(session: Session, *, job_id: str, checkpoint_id: str) -> Checkpoint | None:
    if not storable(checkpoint_id):
        return None
    return session.scalar(
        select(Checkpoint).where(Checkpoint.id == checkpoint_id, Checkpoint.job_id == job_id)
    )


def owned_checkpoint(session: Session, *, owner_id: str, checkpoint_id: str) -> tuple[Checkpoint, Job] | None:
    """The checkpoint and its job, if the job is `owner_id`'s; another owner's answers like none at all."""
    if not storable(checkpoint_id):
        return None
    row = session.execute(
        select(Checkpoint, Job)
        .join(Job, Job.id == Checkpoint.job_id)
        .where(Checkpoint.id == checkpoint_id, Job.owner_id == owner_id)
    ).first()
    return (row[0], row[1]) if row is not None else None


def list_checkpoints_newest_first(
    session: Session, *, job_id: str, limit: int, after: Checkpoint | None = None
) -> tuple[list[Checkpoint], bool]:
    """Latest step first, as OpenAI's API lists them; `after` continues below that checkpoint's step."""
    query = select(Checkpoint).where(Checkpoint.job_id == job_id)
    if after is not None:
        query = query.where(Checkpoint.step < after.step)
    rows = list(session.scalars(query.order_by(Checkpoint.step.desc()).limit(limit + 1)))
    return rows[:limit], len(rows) > limit
