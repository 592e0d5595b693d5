"""The Alembic migration builds exactly service/models.py's tables, on SQLite and on PostgreSQL."""

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, inspect
from sqlalchemy.pool import NullPool

from core.models import Base
from core.schema_version import (
    SchemaNotAtHead,
    alembic_config,
    assert_at_head,
    current_revisions,
    head_revisions,
    is_at_head,
    upgrade_to_head,
)
from core.settings import Settings
from service.app import create_app
from tests.integration.services import fresh_database

REPO_ROOT = Path(__file__).resolve().parents[2]


def differences(database_url: str) -> list[object]:
    """What autogenerate would change to make the database match the models: nothing, ideally."""
    engine = create_engine(database_url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            return list(compare_metadata(context, Base.metadata))
    finally:
        engine.dispose()


def table_names(database_url: str) -> set[str]:
    engine = create_engine(database_url, poolclass=NullPool)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'schema.db'}"


@pytest.fixture
def postgres_url(postgres_server: str) -> Iterator[str]:
    """A fresh PostgreSQL database (through psycopg 3, as the service connects), dropped afterwards."""
    with fresh_database("deltatune_test") as url:
        yield url.replace("postgresql://", "postgresql+psycopg://", 1)


def test_sqlite_upgrade_matches_the_models(sqlite_url: str) -> None:
    assert current_revisions(sqlite_url) == set()
    upgrade_to_head(sqlite_url)
    assert table_names(sqlite_url) == set(Base.metadata.tables) | {"alembic_version"}
    assert differences(sqlite_url) == []
    assert is_at_head(sqlite_url)
    upgrade_to_head(sqlite_url)  # a second run is a no-op
    assert current_revisions(sqlite_url) == head_revisions()


@pytest.mark.integration
def test_postgres_upgrade_matches_the_models(postgres_url: str) -> None:
    assert not is_at_head(postgres_url)
    upgrade_to_head(postgres_url)
    assert table_names(postgres_url) == set(Base.metadata.tables) | {"alembic_version"}
    assert differences(postgres_url) == []
    assert is_at_head(postgres_url)
    assert_at_head(postgres_url)


def test_downgrade_removes_every_table(sqlite_url: str) -> None:
    upgrade_to_head(sqlite_url)
    command.downgrade(alembic_config(sqlite_url), "base")
    assert table_names(sqlite_url) == {"alembic_version"}
    assert current_revisions(sqlite_url) == set()


def test_assert_at_head_refuses_a_database_behind_head(sqlite_url: str) -> None:
    with pytest.raises(SchemaNotAtHead, match=r"behind.*run `deltatune migrate`"):
        assert_at_head(sqlite_url)
    upgrade_to_head(sqlite_url)
    command.downgrade(alembic_config(sqlite_url), "base")
    with pytest.raises(SchemaNotAtHead, match="behind"):
        assert_at_head(sqlite_url)


def test_assert_at_head_refuses_a_newer_schema(sqlite_url: str) -> None:
    upgrade_to_head(sqlite_url)
    engine = create_engine(sqlite_url, poolclass=NullPool)
    with engine.begin() as connection:
        connection.exec_driver_sql("UPDATE alembic_version SET version_num = 'from_the_future'")
    engine.dispose()
    with pytest.raises(SchemaNotAtHead, match="from_the_future.*newer version"):
        assert_at_head(sqlite_url)


def test_app_migrates_its_own_database_when_embedded(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, auto_migrate=True)
    with TestClient(create_app(settings)) as client:
        assert client.get("/readyz").status_code == 200
    assert is_at_head(settings.database_url)


def test_app_refuses_to_start_on_a_schema_behind_head(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, auto_migrate=False)
    with pytest.raises(SchemaNotAtHead, match="deltatune migrate"), TestClient(create_app(settings)):
        pass
    assert not is_at_head(settings.database_url)


def test_alembic_command_line_works_from_the_repo_root(tmp_path: Path) -> None:
    database_url = f"sqlite:///{tmp_path / 'cli.db'}"
    environment = {**os.environ, "DATABASE_URL": database_url}
    result = subprocess.run(
        [sys.executable, "-m", "alembic", "-c", "alembic.ini", "upgrade", "head"],
        cwd=REPO_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert is_at_head(database_url)


LEASE_COLUMNS = {"attempt", "lease_expires_at", "heartbeat_at", "dispatched_at", "dispatches"}


def columns(database_url: str, table: str) -> set[str]:
    engine = create_engine(database_url, poolclass=NullPool)
    try:
        return {column["name"] for column in inspect(engine).get_columns(table)}
    finally:
        engine.dispose()


def check_lease_migration(database_url: str) -> None:
    """0005 adds the lease columns to rows already there (attempt 0: never claimed under a lease), and
    its downgrade takes them out again."""
    config = alembic_config(database_url)
    command.upgrade(config, "0004")
    engine = create_engine(database_url, poolclass=NullPool)
    with engine.begin() as connection:
        connection.exec_driver_sql(
            "INSERT INTO owners (id, name, created_at) VALUES ('o', 'o', '2026-01-01')"
        )
        connection.exec_driver_sql(
            "INSERT INTO transferability_runs (id, owner_id, status, request, queue, results, created_at) "
            "VALUES ('r', 'o', 'running', '{}', 'cpu', '[]', '2026-01-01')"
        )
    command.upgrade(config, "0005")
    for table in ("jobs", "transferability_runs"):
        assert columns(database_url, table) >= LEASE_COLUMNS
    with engine.connect() as connection:
        row = connection.exec_driver_sql(
            "SELECT attempt, dispatches, lease_expires_at FROM transferability_runs"
        ).one()
    assert tuple(row) == (0, 0, None)
    command.downgrade(config, "0004")
    for table in ("jobs", "transferability_runs"):
        assert not LEASE_COLUMNS & columns(database_url, table)
    command.upgrade(config, "head")
    assert differences(database_url) == []
    engine.dispose()


def test_the_lease_migration_goes_up_and_down_on_sqlite(sqlite_url: str) -> None:
    check_lease_migration(sqlite_url)


@pytest.mark.integration
def test_the_lease_migration_goes_up_and_down_on_postgres(postgres_url: str) -> None:
    check_lease_migration(postgres_url)


def check_worker_figures_migration(database_url: str) -> None:
    """0009 adds the worker_figures table (an infinite exchange rate, a one-GPU machine's, stored as
    it is), and its downgrade takes it out again, leaving the rest at 0008."""
    config = alembic_config(database_url)
    command.upgrade(config, "0009")
    engine = create_engine(database_url, poolclass=NullPool)
    infinity = "'Infinity'" if database_url.startswith("postgresql") else "9e999"  # SQLite reads Inf
    with engine.begin() as connection:
        connection.exec_driver_sql(
            "INSERT INTO worker_figures (hostname, queues, device, float32_flops, bf16_flops, layer_seconds, "
            "branch_seconds, dropout_seconds, optimizer_parameters_per_second, exchange_bytes_per_second, "
            f"baseline_bytes, measured_at, seen_at) VALUES ('w@h', 'gpu', 'cuda', 1e14, 2e14, 1e-5, 1e-6, "
            f"0, 1e10, {infinity}, 0, '2026-12-07', '2026-12-07')"
        )
    with engine.connect() as connection:
        rate = connection.exec_driver_sql("SELECT exchange_bytes_per_second FROM worker_figures").scalar()
    assert rate == float("inf")
    command.downgrade(config, "0008")
    assert "worker_figures" not in table_names(database_url)
    assert current_revisions(database_url) == {"0008"}
    command.upgrade(config, "head")
    assert differences(database_url) == []
    engine.dispose()


def test_the_worker_figures_migration_goes_up_and_down_on_sqlite(sqlite_url: str) -> None:
    check_worker_figures_migration(sqlite_url)


@pytest.mark.integration
def test_the_worker_figures_migration_goes_up_and_down_on_postgres(postgres_url: str) -> None:
    check_worker_figures_migration(postgres_url)
