"""Pause: a client's request that a running job stop at its next step boundary, keep a resume point
and wait, `paused`, until it is resumed (the status itself is a string column: no change for it).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01

Written by hand to match core/models.py; tests/service/test_schema.py checks that autogenerate
finds no difference on SQLite and PostgreSQL.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(
            sa.Column("pause_requested", sa.Boolean(), nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("pause_requested")
