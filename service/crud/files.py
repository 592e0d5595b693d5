"""Files: the rows behind /v1/files, always scoped to their owner."""

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from core.models import File, Job
from service.crud import storable
from service.crud.pages import newest_first_page

PROCESSED = "processed"
ERROR = "error"
# A file an old job still references: its blob is gone, its row stays for the job's sake.
DELETED = "deleted"


def get_file(session: Session, *, owner_id: str, file_id: str) -> File | None:
    """The owner's file, or None: another owner's id and a deleted file look exactly like unknown ones."""
    if not storable(file_id):
        return None
    return session.scalar(
        select(File).where(File.id == file_id, File.owner_id == owner_id, File.status != DELETED)
    )


def list_files(
    session: Session, *, owner_id: str, limit: int, after: File | None = None
) -> tuple[list[File], bool]:
    query = select(File).where(File.owner_id == owner_id, File.status != DELETED)
    return newest_first_page(session, query, File, limit=limit, after=after)


def jobs_using_file(session: Session, *, file_id: str) -> list[Job]:
    return list(
        session.scalars(
            select(Job).where(or_(Job.training_file_id == file_id, Job.validation_file_id == file_id))
        )
    )


def delete_file(session: Session, *, file: File) -> None:
    """Forget a file: the row goes, unless a job references it, then it is only marked deleted."""
    if jobs_using_file(session, file_id=file.id):
        file.status = DELETED
    else:
        session.delete(file)
    session.commit()
