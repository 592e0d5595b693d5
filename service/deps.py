"""Request dependencies as `Annotated` aliases: `SettingsDep`, `SessionDep`, `StorageDep`, `CurrentOwner`.

Settings and the sessionmaker come from `app.state`, set by `create_app`, so two apps built with
different settings (as the tests do) never share a database.
"""

from collections.abc import Iterator
from typing import Annotated

from celery import Celery
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from core.models import Owner
from core.settings import Settings
from core.storage import Storage
from service.auth import owner_for_key
from service.errors import Unauthorized

# auto_error=False: a missing header must answer our error shape, not FastAPI's default body.
bearer_scheme = HTTPBearer(auto_error=False, description="An API key from `deltatune keys create`.")


# Dependencies that only read app.state are async: FastAPI runs a sync one in its thread pool, one
# hop per dependency per request.
async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_storage(request: Request) -> Storage:
    storage: Storage = request.app.state.storage
    return storage


def get_session(request: Request) -> Iterator[Session]:
    session: Session = request.app.state.sessionmaker()
    try:
        yield session
    finally:
        session.close()


async def get_celery(request: Request) -> Celery:
    celery: Celery = request.app.state.celery
    return celery


SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionDep = Annotated[Session, Depends(get_session)]
StorageDep = Annotated[Storage, Depends(get_storage)]
CeleryDep = Annotated[Celery, Depends(get_celery)]
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)]


def current_owner(session: SessionDep, credentials: Credentials) -> Owner:
    if credentials is None:
        raise Unauthorized(
            "missing API key: send the header 'Authorization: Bearer <key>'", code="missing_api_key"
        )
    owner = owner_for_key(session, credentials.credentials)
    if owner is None:
        raise Unauthorized("invalid API key: it is unknown or has been revoked", code="invalid_api_key")
    return owner


CurrentOwner = Annotated[Owner, Depends(current_owner)]
