"""Reports say which decoding wrote them and what the draft gate decided.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02

- reports.decoding: the decoding with its settings ("onestep", "multistep steps=8 tau=0.85").
- reports.gate: the draft gate's decision for the stored draft: "passed" (sent as first decoded)
  or "redecoded" (the first draft was broken; this one, decoded again with more steps, is not).
  A draft the gate holds is never stored: its study fails with the reason.
Plain nullable strings: reports written before this revision have neither. Columns are added and
dropped in place, never by batch mode's table copy.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("reports", sa.Column("decoding", sa.String(64), nullable=True))
    op.add_column("reports", sa.Column("gate", sa.String(16), nullable=True))


def downgrade() -> None:
    # Plain DROP COLUMN (SQLite >= 3.35 has it): batch mode's table copy would cascade-delete every
    # report's deliveries on SQLite (see 0004).
    op.execute("ALTER TABLE reports DROP COLUMN gate")
    op.execute("ALTER TABLE reports DROP COLUMN decoding")
