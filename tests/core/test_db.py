"""The API's engine: JSON columns read back exactly, its pool sized by the connections asked for, and
a connection the server dropped replaced before use (a ping only after a while idle)."""

import math
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import JSON, Column, Engine, Integer, MetaData, Table, insert, select

import core.db
from core.db import make_engine, read_json
from core.settings import Settings
from tests.integration.services import fresh_database


def test_read_json_reads_what_orjson_refuses() -> None:
    assert read_json(b'{"a": [1, 2.5, "x", null]}') == {"a": [1, 2.5, "x", None]}
    assert read_json("[18446744073709551617]") == [2**64 + 1]  # beyond 64 bits: orjson gives a float
    assert read_json(b'{"seed": -18446744073709551617}') == {"seed": -(2**64) - 1}
    assert math.isnan(read_json('{"loss": NaN}')["loss"])  # what json.dumps writes to SQLite


def test_json_columns_round_trip_and_the_pool_is_sized(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}", connections=3)
    table = Table("t", MetaData(), Column("id", Integer, primary_key=True), Column("data", JSON))
    table.metadata.create_all(engine)
    stored = {"spec": {"method": {"type": "lora", "r": 8}}, "big": 2**70, "nan": float("nan")}
    with engine.begin() as connection:
        connection.execute(insert(table).values(id=1, data=stored))
    with engine.connect() as connection:
        read = connection.scalar(select(table.c.data))
    assert read["spec"] == stored["spec"] and read["big"] == 2**70 and math.isnan(read["nan"])
    assert engine.pool.size() == 3 and engine.pool._max_overflow == 3  # type: ignore[attr-defined]
    engine.dispose()


@pytest.fixture
def postgres_engine(postgres_server: str) -> Iterator[Engine]:
    with fresh_database("deltatune_ping") as url:
        engine = make_engine(Settings(database_url=url).database_url, connections=1)
        yield engine
        engine.dispose()


def backend_pid(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.exec_driver_sql("SELECT pg_backend_pid()").scalar_one())


@pytest.mark.integration
def test_a_connection_idle_for_a_while_that_its_server_dropped_is_replaced_unseen(
    postgres_engine: Engine, postgres_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    dropped = backend_pid(postgres_engine)
    with psycopg.connect(postgres_server, autocommit=True) as admin:  # as a server restart does
        admin.execute("SELECT pg_terminate_backend(%s)", (dropped,))
    monkeypatch.setattr(core.db, "PING_AFTER_IDLE_SECONDS", 0.0)  # every returned connection is idle
    assert backend_pid(postgres_engine) != dropped


@pytest.mark.integration
def test_only_a_connection_idle_for_a_while_is_pinged(
    postgres_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    pings = []
    ping = postgres_engine.dialect.do_ping
    monkeypatch.setattr(postgres_engine.dialect, "do_ping", lambda c: pings.append(c) or ping(c))
    backend_pid(postgres_engine)
    backend_pid(postgres_engine)  # returned a moment ago: no round trip before the query
    assert pings == []
    monkeypatch.setattr(core.db, "PING_AFTER_IDLE_SECONDS", 0.0)
    backend_pid(postgres_engine)
    assert len(pings) == 1
