"""Safety columns: a report's frozen identity, held deliveries, job liveness, conflicting studies.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02

- reports.identity: the patient, order and study attributes (and the source image UIDs) the draft
  was written for, frozen at inference; the outbox builds the SR and the ORU from them, never from
  the spool file as it is at send time.
- deliveries.status "held": the outbox stopped a message for an operator (the spool no longer agrees
  with the frozen identity, or the report has none).
- jobs.worker_host / worker_pid / heartbeat_at: which process runs an attempt and when it last said
  so; the reconciler buries attempts whose process is gone and re-queues their studies.
- studies.identity_conflict: why the study's instances disagree on who the patient is (not drafted).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_OLD_DELIVERY_STATUSES = ("pending", "delivered", "retrying", "failed")
_NEW_DELIVERY_STATUSES = (*_OLD_DELIVERY_STATUSES, "held")


def _status_check(values: tuple[str, ...]) -> str:
    return "status IN (" + ", ".join(f"'{value}'" for value in values) + ")"


def upgrade() -> None:
    with op.batch_alter_table("reports") as batch:
        batch.add_column(sa.Column("identity", sa.JSON(), nullable=True))
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_constraint(op.f("ck_deliveries_delivery_status"), type_="check")
        batch.create_check_constraint(op.f("ck_deliveries_delivery_status"), _status_check(_NEW_DELIVERY_STATUSES))
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("worker_host", sa.String(255), nullable=True))
        batch.add_column(sa.Column("worker_pid", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("studies") as batch:
        batch.add_column(sa.Column("identity_conflict", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("studies") as batch:
        batch.drop_column("identity_conflict")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("heartbeat_at")
        batch.drop_column("worker_pid")
        batch.drop_column("worker_host")
    op.execute("UPDATE deliveries SET status = 'failed' WHERE status = 'held'")
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_constraint(op.f("ck_deliveries_delivery_status"), type_="check")
        batch.create_check_constraint(op.f("ck_deliveries_delivery_status"), _status_check(_OLD_DELIVERY_STATUSES))
    with op.batch_alter_table("reports") as batch:
        batch.drop_column("identity")
