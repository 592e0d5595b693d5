"""The one check every route that names an uploaded file makes: it is the owner's, and processed."""

from sqlalchemy.orm import Session

from core.storage.keys import file_key
from service.crud import files as file_crud
from service.errors import ApiError


def check_data_file(session: Session, owner_id: str, file_id: str, param: str) -> str:
    """The storage key of a usable file; ApiError naming `param` otherwise (another owner's is unknown)."""
    file = file_crud.get_file(session, owner_id=owner_id, file_id=file_id)
    if file is None:
        raise ApiError(f"{param}: no file with id {file_id!r}", param=param, code="file_not_found")
    if file.status != file_crud.PROCESSED:
        raise ApiError(
            f"{param}: file {file_id!r} is not usable ({file.status}: {file.status_details})",
            param=param,
            code="file_not_ready",
        )
    return file_key(file.id)
