"""read_in_thread: a read runs in autocommit in one thread trip and gives its connection back."""

import asyncio
import threading

from fastapi import FastAPI, Request
from fastapi.security import HTTPAuthorizationCredentials
from sqlalchemy import text
from sqlalchemy.orm import Session

from service.auth import create_api_key
from service.deps import current_owner, read_in_thread


def test_a_read_runs_in_autocommit_off_the_event_loop_and_gives_its_connection_back(app: FastAPI) -> None:
    seen = {}

    def read(session: Session, value: int) -> int:
        connection = session.connection()
        seen["isolation"] = connection.get_execution_options().get("isolation_level")
        seen["thread"] = threading.get_ident()
        return int(session.scalar(text("SELECT :value"), {"value": value}))

    session = app.state.sessionmaker()
    assert asyncio.run(read_in_thread(session, read, 7)) == 7
    assert seen["isolation"] == "AUTOCOMMIT"
    assert seen["thread"] != threading.get_ident()
    assert not session.in_transaction() and app.state.engine.pool.checkedout() == 0


def test_a_read_after_the_key_lookup_goes_on_in_its_transaction(app: FastAPI) -> None:
    session = app.state.sessionmaker()
    session.execute(text("SELECT 1"))  # as current_owner's database lookup does on a cache miss

    def read(session: Session) -> str | None:
        return session.connection().get_execution_options().get("isolation_level")

    assert asyncio.run(read_in_thread(session, read)) is None
    assert app.state.engine.pool.checkedout() == 0


def test_a_key_lookup_gives_its_connection_back_before_the_route_waits_for_a_read(app: FastAPI) -> None:
    # A lookup that kept its connection while its request waited for a read slot could stall a process:
    # when a key's cache entry expired under load, the requests that missed held every pooled
    # connection waiting for slots, and the ones holding slots (hits a moment before) waited for a
    # connection, until the pool's 30 s timeout (benchmarks/api_load.py, 50 requests at once).
    key = create_api_key(app.state.sessionmaker(), owner_name="alice")
    session = app.state.sessionmaker()
    request = Request({"type": "http", "app": app})
    credentials = HTTPAuthorizationCredentials(scheme="Bearer", credentials=key)

    owner = asyncio.run(current_owner(request, session, credentials))  # a miss: asks the database
    assert len(app.state.api_keys) == 1 and owner.name == "alice"
    assert not session.in_transaction() and app.state.engine.pool.checkedout() == 0
