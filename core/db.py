"""Engines and sessions, built from the settings a caller is given (never at import time).

The API keeps one engine per app (`app.state`); a worker task and a CLI command each build their own
with `sessions_for` and dispose of it, so a forked pool process never shares a connection with its
parent.
"""

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from core.settings import Settings


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record):  # type: ignore[no-untyped-def]
            # WAL lets the API read while the worker writes events; foreign keys are off by default.
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    return create_engine(url, pool_pre_ping=True)


@contextmanager
def sessions_for(settings: Settings) -> Iterator[sessionmaker[Session]]:
    """A sessionmaker on a fresh engine for `settings`' database, disposed of on exit."""
    engine = make_engine(settings.database_url)
    try:
        yield sessionmaker(engine, expire_on_commit=False)
    finally:
        engine.dispose()
