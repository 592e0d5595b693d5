"""Request dependencies as `Annotated` aliases: `SettingsDep`, `SessionDep`, `StorageDep`, `CurrentOwner`.

Settings, the sessionmaker and the key cache come from `app.state`, set by `create_app`, so two apps
built with different settings (as the tests do) never share a database.

They are async, so a request goes to the thread pool only for database work: FastAPI runs a sync
dependency there, one hop per dependency (two for one that yields), and on a 2-core machine each
hop was worth as much as the query behind it (benchmarks/api_load.py).
"""

from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any, TypeVar
from weakref import WeakKeyDictionary

import anyio
from anyio.lowlevel import RunVar
from celery import Celery
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Engine, QueuePool
from sqlalchemy.orm import Session

from core.settings import Settings
from core.storage import Storage
from service.auth import hash_api_key, owner_for_key_hash
from service.errors import Unauthorized
from service.key_cache import AuthenticatedOwner, KeyCache

# auto_error=False: a missing header must answer our error shape, not FastAPI's default body.
bearer_scheme = HTTPBearer(auto_error=False, description="An API key from `deltatune keys create`.")


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_storage(request: Request) -> Storage:
    storage: Storage = request.app.state.storage
    return storage


async def get_session(request: Request) -> AsyncIterator[Session]:
    # Making a session touches no database: it takes a connection at its first query, in the thread
    # pool, where the route that uses it runs.
    session: Session = request.app.state.sessionmaker()
    try:
        yield session
    finally:
        await _close(session)


async def _close(session: Session) -> None:
    if not session.in_transaction():  # it never took a connection, or gave it back at a commit
        session.close()
        return
    # Ending the transaction is a round trip, so it runs in a thread; shielded, so a client that
    # leaves cannot strand the connection; with a limiter of its own, as FastAPI closes a sync
    # dependency, so it never waits for a thread behind requests that wait for this connection.
    with anyio.CancelScope(shield=True):
        await anyio.to_thread.run_sync(session.close, limiter=anyio.CapacityLimiter(1))


Answer = TypeVar("Answer")


async def read_in_thread(session: Session, read: Callable[..., Answer], *args: Any) -> Answer:
    """A read-only route's database work, `read(session, *args)`, in one trip to the thread pool.

    Its statements run in autocommit: each sees the rows committed before it, as under PostgreSQL's
    default READ COMMITTED, without the round trips of BEGIN and ROLLBACK. (A route that writes must
    not come here: its statements would not commit or fail together.) The session gives its
    connection back at the end of the trip, so the request then closes it on the event loop without
    a second trip. `read` returns the answer built (a response model, or the Response), not rows.
    """
    return await anyio.to_thread.run_sync(
        _read_then_close, session, read, *args, limiter=_reads_limiter(session)
    )


# At most as many reads in the thread pool at once as the pool has connections: the others wait on
# the event loop, in order and at no cost, and never take a thread that a write or a dry run needs.
# Letting them wait in threads, for a connection, stalled a process under 200 GET/s beside dry runs
# (benchmarks/api_load.py). One limiter per engine and event loop: anyio's limiters belong to one.
_reads_limiters: RunVar[WeakKeyDictionary[Engine, anyio.CapacityLimiter]] = RunVar("deltatune_reads")


def _reads_limiter(session: Session) -> anyio.CapacityLimiter | None:
    engine = session.get_bind()
    if not isinstance(engine, Engine) or not isinstance(engine.pool, QueuePool):
        return None  # anyio's default limiter
    try:
        limiters = _reads_limiters.get()
    except LookupError:
        limiters = WeakKeyDictionary()
        _reads_limiters.set(limiters)
    if engine not in limiters:
        limiters[engine] = anyio.CapacityLimiter(engine.pool.size())
    return limiters[engine]


def _read_then_close(session: Session, read: Callable[..., Answer], *args: Any) -> Answer:
    if not session.in_transaction():  # else the caller began one: the read goes on in it
        session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
    answer = read(session, *args)
    session.close()  # on an exception the request's own close (get_session) ends it
    return answer


async def get_celery(request: Request) -> Celery:
    celery: Celery = request.app.state.celery
    return celery


SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionDep = Annotated[Session, Depends(get_session)]
StorageDep = Annotated[Storage, Depends(get_storage)]
CeleryDep = Annotated[Celery, Depends(get_celery)]
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)]


async def current_owner(
    request: Request, session: SessionDep, credentials: Credentials
) -> AuthenticatedOwner:
    """The key's owner: from this process's key cache, or else from the database (then cached)."""
    if credentials is None:
        raise Unauthorized(
            "missing API key: send the header 'Authorization: Bearer <key>'", code="missing_api_key"
        )
    key_hash = hash_api_key(credentials.credentials)
    keys: KeyCache = request.app.state.api_keys
    owner = keys.get(key_hash)
    if owner is None:
        # A read like the route's: it waits for a read slot on the event loop and gives its connection
        # back before the route waits for one. Keeping it (in a transaction) stalled a process when a
        # key's cache entry expired under load: the requests that missed held every pooled connection
        # while waiting for slots, and those holding slots waited for a connection.
        owner = await read_in_thread(session, owner_for_key_hash, key_hash)
        if owner is None:
            raise Unauthorized("invalid API key: it is unknown or has been revoked", code="invalid_api_key")
        keys.remember(key_hash, owner)
    return owner


CurrentOwner = Annotated[AuthenticatedOwner, Depends(current_owner)]
