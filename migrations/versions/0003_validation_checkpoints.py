"""Data formats, the validation report of a job, its kept checkpoints, and jobs built on jobs.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29

Written by hand to match service/models.py; tests/service/test_schema.py checks that autogenerate
finds no difference on SQLite and PostgreSQL.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Files uploaded before formats existed were all single-label classification.
    op.add_column("files", sa.Column("format", sa.String(32), nullable=True))
    op.execute("UPDATE files SET format = 'classification' WHERE status = 'processed'")
    op.add_column("jobs", sa.Column("validation", sa.JSON(), nullable=True))
    op.create_table(
        "checkpoints",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("job_id", sa.String(64), sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("epoch", sa.Float(), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("files", sa.JSON(), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("job_id", "step"),
    )
    op.create_index("ix_checkpoints_job_id", "checkpoints", ["job_id"])


def downgrade() -> None:
    op.drop_table("checkpoints")
    op.drop_column("jobs", "validation")
    op.drop_column("files", "format")
