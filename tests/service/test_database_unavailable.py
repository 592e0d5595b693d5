"""A database that cannot be reached answers 503 with Retry-After in the error shape, never 500; a
fault in a statement is still a 500 (a bug no retry fixes)."""

import logging
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text
from sqlalchemy import exc as sa_exc

from core.db import database_unavailable
from core.settings import Settings
from service.app import create_app
from tests.faults.servers import free_port

ROUTES = [
    ("GET", "/v1/jobs"),
    ("GET", "/v1/files"),
    ("GET", "/v1/models"),
    ("GET", "/v1/methods"),
    ("POST", "/v1/jobs"),
    ("POST", "/v1/files"),
    ("GET", "/v1/jobs/ftjob-1/events"),
]
HEADERS = {"Authorization": "Bearer dt-some-key"}


def assert_database_unavailable(response: Any, retry_after: int) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["Retry-After"] == str(retry_after)
    error = response.json()["error"]
    assert error == {
        "message": f"the database is unreachable right now; retry in {retry_after} seconds",
        "type": "service_unavailable",
        "param": None,
        "code": "database_unavailable",
    }


def unstarted_client(settings: Settings) -> TestClient:
    # No lifespan: it would try to migrate a database that is not there.
    return TestClient(create_app(settings), raise_server_exceptions=False)


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_postgres_port_with_nothing_listening_is_503(
    tmp_path: Path, method: str, path: str, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(
        data_dir=tmp_path,
        database_url=f"postgresql://postgres@127.0.0.1:{free_port()}/x",
        retry_after_seconds=3,
    )
    with caplog.at_level(logging.INFO):
        response = unstarted_client(settings).request(method, path, headers=HEADERS, json={})
    assert_database_unavailable(response, 3)
    # An outage is logged in one line, not as an unhandled error with a traceback.
    assert not [record for record in caplog.records if record.exc_info], caplog.text


def test_sqlite_file_that_cannot_be_opened_is_503(tmp_path: Path) -> None:
    missing = tmp_path / "gone" / "deltatune.db"  # its folder does not exist: "unable to open database file"
    settings = Settings(data_dir=tmp_path, database_url=f"sqlite:///{missing}")
    response = unstarted_client(settings).get("/v1/files", headers=HEADERS)
    assert_database_unavailable(response, settings.retry_after_seconds)


def test_readyz_says_when_to_retry(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, database_url=f"postgresql://postgres@127.0.0.1:{free_port()}/x")
    response = unstarted_client(settings).get("/readyz")
    assert response.status_code == 503
    assert response.headers["Retry-After"] == str(settings.retry_after_seconds)


def test_a_statement_fault_is_still_a_500(app: FastAPI) -> None:
    @app.get("/broken-query")
    def broken() -> None:
        with app.state.engine.connect() as connection:
            connection.execute(text("SELECT * FROM no_such_table"))

    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/broken-query")
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "internal_error"


def _sqlite_error(message: str) -> sa_exc.OperationalError:
    return sa_exc.OperationalError("SELECT 1", {}, sqlite3.OperationalError(message))


@pytest.mark.parametrize(
    ("error", "unavailable"),
    [
        (_sqlite_error("unable to open database file"), True),
        (_sqlite_error("database is locked"), True),
        (_sqlite_error("database or disk is full"), True),
        (_sqlite_error("no such table: jobs"), False),
        (_sqlite_error('near "SELEC": syntax error'), False),
        (sa_exc.TimeoutError("QueuePool limit of size 5 overflow 10 reached"), True),
        (sa_exc.IntegrityError("INSERT", {}, sqlite3.IntegrityError("UNIQUE constraint failed")), False),
        (ValueError("not a database error"), False),
    ],
)
def test_which_errors_mean_the_database_is_unavailable(error: BaseException, unavailable: bool) -> None:
    assert database_unavailable(error) is unavailable


def test_a_refused_postgres_connection_is_unavailable() -> None:
    engine = create_engine(f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/x")
    with pytest.raises(sa_exc.OperationalError) as raised, engine.connect():
        pass
    assert database_unavailable(raised.value)
