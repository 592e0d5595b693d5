"""A running job's estimated finish: when its attempt expects its last step, from its rate so far.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01

Written by hand to match core/models.py; tests/service/test_schema.py checks that autogenerate
finds no difference on SQLite and PostgreSQL. Existing rows get none: a running job shows one from
its next logging step.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("estimated_finish_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("estimated_finish_at")
