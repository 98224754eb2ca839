"""Reports remember the image the model read, why it was chosen, and the engine's stage timings.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24

The delivery loop builds the SR (its evidence) and the ORU (patient and order) from that image, so
it must be the one inference read, not one chosen again later. Plain types only, as in 0001.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("reports") as batch:  # SQLite: a table copy; PostgreSQL: ALTER TABLE
        batch.add_column(sa.Column("instance_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("view_reason", sa.Text(), nullable=True))
        batch.add_column(sa.Column("timings", sa.JSON(), nullable=True))
        batch.create_foreign_key(
            "fk_reports_instance_id_instances", "instances", ["instance_id"], ["id"], ondelete="SET NULL"
        )


def downgrade() -> None:
    with op.batch_alter_table("reports") as batch:
        batch.drop_constraint("fk_reports_instance_id_instances", type_="foreignkey")
        batch.drop_column("timings")
        batch.drop_column("view_reason")
        batch.drop_column("instance_id")
