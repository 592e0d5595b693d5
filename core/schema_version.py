"""The database schema's version: upgrade it to head, or refuse to run on one that is behind.

Alembic's scripts live in `migrations/` beside the `core` package in the source tree; they are
found from this file's location, so migrating works from any working directory.
"""

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine
from sqlalchemy.pool import NullPool

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


class SchemaNotAtHead(RuntimeError):
    """The database's schema is not the one this code was written for."""


def alembic_config(database_url: str) -> Config:
    if not (MIGRATIONS_DIR / "env.py").is_file():
        raise RuntimeError(
            f"Alembic scripts not found: expected {MIGRATIONS_DIR}/env.py beside the core package"
        )
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # '%' is ConfigParser's interpolation character; URLs may carry it in an escaped password.
    config.set_main_option("sqlalchemy.url", sqlalchemy_url(database_url).replace("%", "%%"))
    return config


def sqlalchemy_url(database_url: str) -> str:
    """A plain postgresql:// URL would pick psycopg2; deltatune ships psycopg 3 (as settings does)."""
    if database_url.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + database_url.split("://", 1)[1]
    return database_url


def upgrade_to_head(database_url: str) -> None:
    """Apply every migration the database lacks (a no-op when it is at head)."""
    command.upgrade(alembic_config(database_url), "head")


def head_revisions() -> set[str]:
    return set(ScriptDirectory.from_config(alembic_config("sqlite://")).get_heads())


def current_revisions(database_url: str) -> set[str]:
    """The revisions stamped in the database; empty for a database never migrated."""
    engine = create_engine(sqlalchemy_url(database_url), poolclass=NullPool)
    try:
        with engine.connect() as connection:
            return set(MigrationContext.configure(connection).get_current_heads())
    finally:
        engine.dispose()


def is_at_head(database_url: str) -> bool:
    return current_revisions(database_url) == head_revisions()


def assert_at_head(database_url: str) -> None:
    """Raise SchemaNotAtHead, saying what to do, unless the database is at head."""
    current, heads = current_revisions(database_url), head_revisions()
    if current == heads:
        return
    script = ScriptDirectory.from_config(alembic_config(database_url))
    unknown = current - {script_revision.revision for script_revision in script.walk_revisions()}
    if unknown:
        raise SchemaNotAtHead(
            f"database schema is at revision {', '.join(sorted(unknown))}, unknown to this "
            "deltatune: a newer version migrated it"
        )
    at = ", ".join(sorted(current)) or "none (empty database)"
    raise SchemaNotAtHead(
        f"database schema is behind: at revision {at}, head is {', '.join(sorted(heads))}; "
        "run `deltatune migrate` to upgrade it"
    )
