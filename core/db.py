"""Engines and sessions, built from the settings a caller is given (never at import time).

The API keeps one engine per app (`app.state`); a worker task and a CLI command each build their own
with `sessions_for` and dispose of it, so a forked pool process never shares a connection with its
parent. The worker's own threads (the sweep, the webhook sender) keep one engine for their lifetime
with `lasting_sessions`: a fresh engine per pass cost a new connection each time (benchmarks/fleet.py).
"""

import json
import os
import re
import sqlite3
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import orjson
from sqlalchemy import Engine, create_engine, event
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session, sessionmaker

from core.settings import Settings

POSTGRES_CONNECT_TIMEOUT_SECONDS = 5
# A pooled connection idle longer than this is pinged before use (see _ping_when_idle).
PING_AFTER_IDLE_SECONDS = 1.0

# SQLite's OperationalError covers bugs (a syntax error, a missing table) as well as a database that
# cannot be used right now; only these mean "try again later".
SQLITE_UNAVAILABLE = (
    "unable to open database file",
    "database is locked",
    "disk i/o error",
    "database or disk is full",
    "attempt to write a readonly database",
)


def database_unavailable(error: BaseException) -> bool:
    """Whether `error` says the database cannot be reached or used now (a retry may succeed), as
    opposed to a fault in the statement or the schema, which no retry fixes."""
    if isinstance(error, sa_exc.TimeoutError):  # no pooled connection came free in time
        return True
    if not isinstance(error, sa_exc.DBAPIError):
        return False
    if error.connection_invalidated:
        return True
    if isinstance(error.orig, sqlite3.Error):
        message = str(error.orig).lower()
        return isinstance(error, sa_exc.OperationalError) and any(m in message for m in SQLITE_UNAVAILABLE)
    # psycopg raises OperationalError for connections refused, lost or shut down by the administrator,
    # and InterfaceError for a connection already closed; statement faults are other classes.
    return isinstance(error, sa_exc.OperationalError | sa_exc.InterfaceError)


# orjson reads an integer beyond 64 bits as a float, silently; such a number has 20 digits or more.
_LONG_NUMBER = re.compile(r"\d{20}")
_LONG_NUMBER_BYTES = re.compile(rb"\d{20}")


def read_json(text: str | bytes) -> Any:
    """A JSON column's value: orjson, 3 to 5 times faster than `json.loads`, which still reads what
    orjson would not read exactly (a run of 20 digits) or refuses (NaN written to SQLite)."""
    long_number = _LONG_NUMBER.search(text) if isinstance(text, str) else _LONG_NUMBER_BYTES.search(text)
    if long_number is None:
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            pass
    return json.loads(text)


def make_engine(url: str, *, connections: int | None = None) -> Engine:
    """An engine for `url`; with `connections`, its pool keeps that many open, and opens as many again
    for a burst (closing those once they are returned).

    SQLAlchemy's default pool keeps 5 and opens up to 10 more that it closes as soon as they are
    returned: under steady load past 5 requests at once, each request paid a new connection (and
    PostgreSQL a new backend process). The API sizes it per process (`api_database_connections`) and
    lets as many reads run at once as the pool keeps (service/deps.py). A pool with no burst room at
    all stalled a process under GETs beside dry runs (benchmarks/api_load.py): leave it some.
    """
    options: dict[str, Any] = {"json_deserializer": read_json}
    if connections is not None:
        options |= {"pool_size": connections, "max_overflow": connections}
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30}, **options)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record):  # type: ignore[no-untyped-def]
            # WAL lets the API read while the worker writes events; foreign keys are off by default.
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    # connect_timeout keeps a request from hanging on a host that does not answer at all (the API
    # answers 503 instead).
    engine = create_engine(url, connect_args={"connect_timeout": POSTGRES_CONNECT_TIMEOUT_SECONDS}, **options)
    _ping_when_idle(engine)
    return engine


def _ping_when_idle(engine: Engine) -> None:
    """Replace the connections a restarted server dropped, as `pool_pre_ping` does, but ping only a
    connection that sat idle in the pool for PING_AFTER_IDLE_SECONDS or more.

    `pool_pre_ping` pings at every checkout: a round trip more for each request, as many as the
    query itself of a `GET /v1/jobs` page (benchmarks/api_load.py). A connection returned less than a
    second ago was working then; if the server went away since, the request fails as one in flight
    at that moment would, answers 503 (service/errors.py), and that disconnect invalidates the pool.
    """

    @event.listens_for(engine, "connect")
    def _connected(_dbapi_connection, record):  # type: ignore[no-untyped-def]
        record.info["returned_at"] = time.monotonic()

    @event.listens_for(engine, "checkin")
    def _returned(_dbapi_connection, record):  # type: ignore[no-untyped-def]
        record.info["returned_at"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _taken(dbapi_connection, record, _proxy):  # type: ignore[no-untyped-def]
        if time.monotonic() - record.info.get("returned_at", 0.0) < PING_AFTER_IDLE_SECONDS:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except engine.dialect.loaded_dbapi.Error as error:
            if engine.dialect.is_disconnect(error, dbapi_connection, None):
                # The pool retries with a new connection, and replaces the other ones from before.
                raise sa_exc.InvalidatePoolError() from error
            raise


def lasting_sessions(settings: Settings) -> tuple[sessionmaker[Session], Engine]:
    """A sessionmaker on an engine that lives as long as its owner (dispose of the engine when done).

    A process forked while it exists (a Celery pool process replaced later) drops the inherited pool
    without closing it, as SQLAlchemy advises: closing would end the parent's connections too.
    """
    engine = make_engine(settings.database_url)
    owned = weakref.ref(engine)

    def forget_in_child() -> None:
        inherited = owned()
        if inherited is not None:
            inherited.dispose(close=False)

    os.register_at_fork(after_in_child=forget_in_child)
    return sessionmaker(engine, expire_on_commit=False), engine


@contextmanager
def sessions_for(settings: Settings) -> Iterator[sessionmaker[Session]]:
    """A sessionmaker on a fresh engine for `settings`' database, disposed of on exit."""
    engine = make_engine(settings.database_url)
    try:
        yield sessionmaker(engine, expire_on_commit=False)
    finally:
        engine.dispose()
