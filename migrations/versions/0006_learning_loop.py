"""The site learning loop: signed reports, drafts scored against them, model roles and promotions.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02

- signed_reports: reports as the radiologist signed them (inbound HL7 or `echo-admin import`),
  matched to studies, with the history of corrections.
- draft_scores: each draft scored against its study's signed report.
- model_versions.role / parent_id / training / gate / promoted_at: candidates retrained on site
  data, the promotion gate's figures, the served version (at most one: a partial unique index).
- model_promotions: every promote and rollback, newest last.
Columns on model_versions are added in place (plain ALTER TABLE ADD COLUMN), never by batch mode's
table copy: on SQLite that copy would drop a table reports and jobs refer to (see 0004). parent_id is
therefore a plain integer, without a foreign key.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "model_versions", sa.Column("role", sa.String(16), nullable=False, server_default="registered")
    )
    op.add_column("model_versions", sa.Column("parent_id", sa.Integer(), nullable=True))
    op.add_column("model_versions", sa.Column("training", sa.JSON(), nullable=True))
    op.add_column("model_versions", sa.Column("gate", sa.JSON(), nullable=True))
    op.add_column("model_versions", sa.Column("promoted_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index(
        "uq_model_versions_serving",
        "model_versions",
        ["role"],
        unique=True,
        sqlite_where=sa.text("role = 'serving'"),
        postgresql_where=sa.text("role = 'serving'"),
    )
    op.create_table(
        "model_promotions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_version_id", sa.Integer(), nullable=False),
        sa.Column("previous_id", sa.Integer(), nullable=True),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["model_version_id"],
            ["model_versions.id"],
            name=op.f("fk_model_promotions_model_version_id_model_versions"),
        ),
        sa.ForeignKeyConstraint(
            ["previous_id"],
            ["model_versions.id"],
            name=op.f("fk_model_promotions_previous_id_model_versions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_model_promotions")),
    )
    op.create_table(
        "signed_reports",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column(
            "source",
            sa.Enum(
                "hl7", "import", name="signed_source", native_enum=False, create_constraint=True, length=16
            ),
            nullable=False,
        ),
        sa.Column("message_key", sa.String(160), nullable=False),
        sa.Column("message_type", sa.String(16), nullable=False),
        sa.Column("sending_facility", sa.String(64), nullable=True),
        sa.Column("accession_number", sa.String(16), nullable=True),
        sa.Column("study_instance_uid", sa.String(64), nullable=True),
        sa.Column("study_id", sa.Integer(), nullable=True),
        sa.Column("result_status", sa.String(1), nullable=False),
        sa.Column("findings", sa.Text(), nullable=False),
        sa.Column("impression", sa.Text(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("signed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("matched_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("replaced_by_id", sa.Integer(), nullable=True),
        sa.Column("raw", sa.Text(), nullable=True),
        sa.Column("parsed", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(
            ["study_id"], ["studies.id"], name=op.f("fk_signed_reports_study_id_studies"), ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["replaced_by_id"],
            ["signed_reports.id"],
            name=op.f("fk_signed_reports_replaced_by_id_signed_reports"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_signed_reports")),
        sa.UniqueConstraint("source", "message_key", name=op.f("uq_signed_reports_source_message_key")),
    )
    for column in ("accession_number", "study_instance_uid", "study_id"):
        op.create_index(op.f(f"ix_signed_reports_{column}"), "signed_reports", [column])
    op.create_table(
        "draft_scores",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("report_id", sa.Integer(), nullable=False),
        sa.Column("signed_report_id", sa.Integer(), nullable=False),
        sa.Column("model_version_id", sa.Integer(), nullable=False),
        sa.Column("true_positives", sa.Integer(), nullable=False),
        sa.Column("false_positives", sa.Integer(), nullable=False),
        sa.Column("false_negatives", sa.Integer(), nullable=False),
        sa.Column("signed_normal", sa.Boolean(), nullable=False),
        sa.Column("edit_distance", sa.Float(), nullable=False),
        sa.Column("impression_changed", sa.Boolean(), nullable=False),
        sa.Column("draft_labels", sa.JSON(), nullable=True),
        sa.Column("signed_labels", sa.JSON(), nullable=True),
        sa.Column("scored_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["report_id"], ["reports.id"], name=op.f("fk_draft_scores_report_id_reports"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["signed_report_id"],
            ["signed_reports.id"],
            name=op.f("fk_draft_scores_signed_report_id_signed_reports"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["model_version_id"],
            ["model_versions.id"],
            name=op.f("fk_draft_scores_model_version_id_model_versions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_draft_scores")),
        sa.UniqueConstraint(
            "report_id", "signed_report_id", name=op.f("uq_draft_scores_report_id_signed_report_id")
        ),
    )
    for column in ("report_id", "signed_report_id", "model_version_id"):
        op.create_index(op.f(f"ix_draft_scores_{column}"), "draft_scores", [column])


def downgrade() -> None:
    op.drop_table("draft_scores")
    op.drop_table("signed_reports")
    op.drop_table("model_promotions")
    op.drop_index("uq_model_versions_serving", table_name="model_versions")
    # Plain DROP COLUMN (SQLite >= 3.35), never batch mode's table copy (see the docstring).
    for column in ("promoted_at", "gate", "training", "parent_id", "role"):
        op.execute(f"ALTER TABLE model_versions DROP COLUMN {column}")
