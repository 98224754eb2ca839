"""A draft superseded by its correction (a frontal read after a lateral): its unsent rows stop.

When inference writes the superseding report, `stop_superseded` ends the old report's rows that have
not gone out as failed, "superseded by report N" (failed, not held: held asks an operator to look
and `echo-admin resend` would release it, while this message must never go). The outbox asks
`superseding_report` before it records or holds a row, and `superseded_rows` for what a correction
names as its predecessor.
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from node.store.models import Delivery, Report
from node.store.states import DeliveryKind, DeliveryStatus

log = logging.getLogger(__name__)

# Rows of a superseded report that are stopped: everything not delivered and not already failed.
_STOPPABLE = (DeliveryStatus.PENDING, DeliveryStatus.RETRYING, DeliveryStatus.HELD)


def stop_superseded(session: Session, superseded_id: int, by: Report, now: datetime) -> list[int]:
    """End the superseded report's rows that have not gone out, in the caller's transaction (the one
    that writes the superseding report `by` and its rows); returns their ids."""
    stopped = list(
        session.scalars(
            select(Delivery)
            .where(Delivery.report_id == superseded_id, Delivery.status.in_(_STOPPABLE))
            .order_by(Delivery.id)
        )
    )
    for row in stopped:
        row.status = DeliveryStatus.FAILED
        row.next_attempt_at = None
        row.last_error = superseded_note(by.id, None, by.revision)
        row.updated_at = now
    session.flush()
    for row in stopped:
        log.info(
            "delivery %d (%s, report %d) stopped: superseded by report %d",
            row.id,
            row.kind,
            superseded_id,
            by.id,
        )
    return [row.id for row in stopped]


def superseding_report(session: Session, report_id: int) -> int | None:
    """The report that supersedes `report_id`, if one does."""
    return session.scalar(select(Report.id).where(Report.supersedes_id == report_id).limit(1))


def superseded_note(by_report_id: int, error: str | None, revision: int | None = None) -> str:
    which = f"report {by_report_id}" + (f" (revision {revision})" if revision is not None else "")
    note = f"superseded by {which}, the draft read from the frontal view: not sent"
    return f"{note} (this attempt: {error})" if error else note


def superseded_rows(
    session: Session, report_ids: set[int | None]
) -> dict[int, tuple[dict[DeliveryKind, Delivery], str | None]]:
    """For each superseded report among `report_ids`: its delivery rows by kind, and the Study Instance
    UID its messages were built with (from its frozen identity)."""
    wanted = {report_id for report_id in report_ids if report_id is not None}
    if not wanted:
        return {}
    found: dict[int, tuple[dict[DeliveryKind, Delivery], str | None]] = {}
    for report in session.scalars(select(Report).where(Report.id.in_(wanted))):
        rows = session.scalars(select(Delivery).where(Delivery.report_id == report.id))
        key = (report.identity or {}).get("key") or {}
        found[report.id] = ({row.kind: row for row in rows}, key.get("StudyInstanceUID") or None)
    return found
