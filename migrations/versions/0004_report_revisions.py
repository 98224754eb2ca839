"""Report revisions: a study drafted again keeps every draft, each later one naming the one it corrects.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-09

A frontal view that arrives after a draft read from a lateral (or from an image nothing marked
frontal) sends the study back to inference; the new draft is a new report row, sent as a corrected
preliminary (an SR whose Predecessor Documents Sequence names the earlier SR, an ORU with OBR-25 C).

- reports.revision: the study's draft number, 1 for the first (existing rows become 1);
- reports.supersedes_id: the report this one corrects (NULL for a first draft);
- the unique constraint (study_id, model_version_id) becomes (study_id, model_version_id, revision):
  inference stays idempotent per draft, and one model may write a study's corrected draft.

Plain types only, as in 0001; SQLite goes through batch mode (a table copy), PostgreSQL ALTERs.
SQLite's table copy drops the old reports table, and with foreign keys on (the node sets the pragma
on every connection, and it cannot be turned off inside the migration's transaction) that DROP
deletes every report's deliveries and their delivery jobs by cascade: they are kept aside in
temporary tables and put back.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


@contextmanager
def _keeping_rows_that_cascade_from_reports() -> Iterator[None]:
    """On SQLite, put back the deliveries (and their jobs) the table copy's DROP TABLE deletes."""
    if op.get_bind().dialect.name != "sqlite":
        yield
        return
    op.execute("CREATE TEMP TABLE _kept_deliveries AS SELECT * FROM deliveries")
    op.execute("CREATE TEMP TABLE _kept_delivery_jobs AS SELECT * FROM jobs WHERE delivery_id IS NOT NULL")
    yield
    op.execute(
        "INSERT INTO deliveries SELECT * FROM _kept_deliveries"
        " WHERE id NOT IN (SELECT id FROM deliveries) AND report_id IN (SELECT id FROM reports)"
    )
    op.execute(
        "INSERT INTO jobs SELECT * FROM _kept_delivery_jobs"
        " WHERE id NOT IN (SELECT id FROM jobs) AND delivery_id IN (SELECT id FROM deliveries)"
    )
    op.execute("DROP TABLE _kept_delivery_jobs")
    op.execute("DROP TABLE _kept_deliveries")


def upgrade() -> None:
    with _keeping_rows_that_cascade_from_reports(), op.batch_alter_table("reports") as batch:
        batch.add_column(sa.Column("revision", sa.Integer(), nullable=False, server_default=sa.text("1")))
        batch.add_column(sa.Column("supersedes_id", sa.Integer(), nullable=True))
        batch.create_foreign_key(
            "fk_reports_supersedes_id_reports", "reports", ["supersedes_id"], ["id"], ondelete="SET NULL"
        )
        batch.drop_constraint("uq_reports_study_id_model_version_id", type_="unique")
        batch.create_unique_constraint(
            "uq_reports_study_id_model_version_id_revision", ["study_id", "model_version_id", "revision"]
        )


def downgrade() -> None:
    # Only the newest draft of each (study, model version) can stay under the old constraint; the
    # corrected draft is the one that was sent last, so the drafts it corrected go (with their
    # deliveries, by the foreign key's cascade).
    op.execute(
        "DELETE FROM reports WHERE EXISTS (SELECT 1 FROM reports AS newer"
        " WHERE newer.study_id = reports.study_id AND newer.model_version_id = reports.model_version_id"
        " AND newer.revision > reports.revision)"
    )
    with _keeping_rows_that_cascade_from_reports(), op.batch_alter_table("reports") as batch:
        batch.drop_constraint("uq_reports_study_id_model_version_id_revision", type_="unique")
        batch.create_unique_constraint(
            "uq_reports_study_id_model_version_id", ["study_id", "model_version_id"]
        )
        batch.drop_constraint("fk_reports_supersedes_id_reports", type_="foreignkey")
        batch.drop_column("supersedes_id")
        batch.drop_column("revision")
