"""Transferability runs: candidate base models scored on a training file before fine-tuning.

Revision ID: 0002
Revises: 0001
Create Date: 2026-05-10

Written by hand to match service/models.py's TransferabilityRun; tests/service/test_schema.py checks
that autogenerate finds no difference on SQLite and PostgreSQL.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def timestamp(name: str, *, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "transferability_runs",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("owner_id", sa.String(64), sa.ForeignKey("owners.id", ondelete="CASCADE"), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("request", sa.JSON(), nullable=False),
        sa.Column("queue", sa.String(32), nullable=False),
        sa.Column("results", sa.JSON(), nullable=False),
        sa.Column("error_code", sa.String(64), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("worker", sa.String(255), nullable=True),
        timestamp("created_at"),
        timestamp("started_at", nullable=True),
        timestamp("finished_at", nullable=True),
    )
    op.create_index("ix_transferability_runs_owner_id", "transferability_runs", ["owner_id"])
    op.create_index("ix_transferability_runs_status", "transferability_runs", ["status"])
    op.create_index("ix_transferability_runs_created_at", "transferability_runs", ["created_at"])


def downgrade() -> None:
    op.drop_table("transferability_runs")
