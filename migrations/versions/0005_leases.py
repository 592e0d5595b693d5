"""Leases: the attempt number (fencing token), the lease and heartbeat of a running job or run, and
when its message was last sent (the sweep re-sends one that may have been lost).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-08

Written by hand to match core/models.py; tests/service/test_schema.py checks that autogenerate
finds no difference on SQLite and PostgreSQL. Rows running before the upgrade get no lease: the
sweep takes them as expired and queues them again.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("jobs", "transferability_runs")
COLUMNS = ("attempt", "lease_expires_at", "heartbeat_at", "dispatched_at", "dispatches")


def upgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("attempt", sa.Integer(), nullable=False, server_default="0"))
            batch.add_column(sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True))
            batch.add_column(sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True))
            batch.add_column(sa.Column("dispatched_at", sa.DateTime(timezone=True), nullable=True))
            batch.add_column(sa.Column("dispatches", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            for column in reversed(COLUMNS):
                batch.drop_column(column)
