"""Deliveries of the structured results: the IHE AI Results SR and the FHIR DiagnosticReport.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02

deliveries.kind admits two more values beside "sr" (the TID 2000 narrative SR) and "oru":
"air" (the TID 1500 AI Results SR, to the same PACS) and "fhir" (the DiagnosticReport, to a FHIR
server or a folder). Only the CHECK constraint changes; no row does.

On PostgreSQL the constraint is dropped and added again. On SQLite a CHECK constraint cannot be
altered, and batch mode's table copy would drop `deliveries`, which cascade-deletes every delivery
job (`jobs.delivery_id ... ON DELETE CASCADE`, see 0004). So the table's stored definition is
rewritten in place, the procedure SQLite documents for schema changes that leave the stored rows
valid ("Making Other Kinds Of Table Schema Changes", lang_altertable.html): every existing row
already satisfies the wider constraint. The schema cookie is bumped so every open connection
re-reads the schema, and the database is checked afterwards.
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_NAME = "ck_deliveries_delivery_kind"
_BEFORE = ("sr", "oru")
_AFTER = ("sr", "air", "oru", "fhir")


def _check(kinds: tuple[str, ...]) -> str:
    return "kind IN (" + ", ".join(f"'{kind}'" for kind in kinds) + ")"


def _rewrite_sqlite(before: tuple[str, ...], after: tuple[str, ...]) -> None:
    bind = op.get_bind()
    old, new = f"CHECK ({_check(before)})", f"CHECK ({_check(after)})"
    sql = bind.exec_driver_sql(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'deliveries'"
    ).scalar()
    if sql is None or old not in sql:
        raise RuntimeError(f"deliveries: constraint {_NAME} is not {old}; the schema is not what 0006 left")
    version = bind.exec_driver_sql("PRAGMA schema_version").scalar()
    bind.exec_driver_sql("PRAGMA writable_schema = ON")
    try:
        bind.exec_driver_sql(
            "UPDATE sqlite_master SET sql = ? WHERE type = 'table' AND name = 'deliveries'",
            (sql.replace(old, new),),
        )
        bind.exec_driver_sql(f"PRAGMA schema_version = {int(version) + 1}")
    finally:
        bind.exec_driver_sql("PRAGMA writable_schema = OFF")
    problems = [row[0] for row in bind.exec_driver_sql("PRAGMA integrity_check").all()]
    if problems != ["ok"]:
        raise RuntimeError(f"integrity check after rewriting deliveries: {'; '.join(problems)}")


def _migrate(before: tuple[str, ...], after: tuple[str, ...]) -> None:
    if op.get_bind().dialect.name == "sqlite":
        _rewrite_sqlite(before, after)
        return
    op.drop_constraint(op.f(_NAME), "deliveries", type_="check")
    op.create_check_constraint(op.f(_NAME), "deliveries", _check(after))


def upgrade() -> None:
    _migrate(_BEFORE, _AFTER)


def downgrade() -> None:
    # The structured results' rows have no place in the narrower schema.
    op.execute("DELETE FROM deliveries WHERE kind IN ('air', 'fhir')")
    _migrate(_AFTER, _BEFORE)
