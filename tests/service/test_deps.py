"""read_in_thread: a read runs in autocommit in one thread trip and gives its connection back."""

import asyncio
import threading

from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.orm import Session

from service.deps import read_in_thread


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
