"""The figures each worker measured on its machine at start, which the dry run's estimate reads.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07

Written by hand to match core/models.py; tests/service/test_schema.py checks that autogenerate
finds no difference on SQLite and PostgreSQL. Empty after the upgrade: each worker publishes its
row when it next starts, and until then dry runs use the settings' figures.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FIGURES = (
    "float32_flops",
    "bf16_flops",
    "layer_seconds",
    "branch_seconds",
    "dropout_seconds",
    "optimizer_parameters_per_second",
    "exchange_bytes_per_second",
)


def upgrade() -> None:
    op.create_table(
        "worker_figures",
        sa.Column("hostname", sa.String(255), primary_key=True),
        sa.Column("queues", sa.String(255), nullable=False),
        sa.Column("device", sa.String(8), nullable=False),
        *(sa.Column(name, sa.Float(), nullable=False) for name in FIGURES),
        sa.Column("baseline_bytes", sa.BigInteger(), nullable=False),
        sa.Column("measured_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_worker_figures_seen_at", "worker_figures", ["seen_at"])


def downgrade() -> None:
    op.drop_table("worker_figures")
