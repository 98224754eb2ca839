"""After a delivery is recorded: the study's state (delivered when every row is, failed when one
failed for good), and the destination's waiting rows woken when it answers again."""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from node.store.models import Delivery, Report, Study
from node.store.states import DeliveryKind, DeliveryStatus, StudyState
from node.store.transitions import IllegalTransition, transition

log = logging.getLogger(__name__)


def settle_study(session: Session, report_id: int) -> StudyState | None:
    """Move the report's study out of "inferred" once its deliveries decide it; returns the new state.

    Done under a savepoint: if another process moved the study first, the outcome just recorded
    still commits.
    """
    report = session.get_one(Report, report_id)
    study = session.get_one(Study, report.study_id)
    session.refresh(study)
    if study.state is not StudyState.INFERRED:
        return None
    rows = list(
        session.scalars(select(Delivery).where(Delivery.report_id == report_id).order_by(Delivery.id))
    )
    failed = [row for row in rows if row.status is DeliveryStatus.FAILED]
    if failed:
        target, reason = (
            StudyState.FAILED,
            "; ".join(f"{row.kind.value.upper()} to {row.target} failed: {row.last_error}" for row in failed),
        )
    elif rows and all(row.status is DeliveryStatus.DELIVERED for row in rows):
        target = StudyState.DELIVERED
        reason = " and ".join(f"{row.kind.value.upper()} to {row.target}" for row in rows) + " delivered"
    else:
        return None
    try:
        with session.begin_nested():
            transition(session, study, target, reason)
    except IllegalTransition as error:
        log.info("study %d left as it is: %s", study.id, error)
        return None
    return target


def wake_waiting(session: Session, target: str, kind: DeliveryKind, now: datetime) -> None:
    """The destination answered again: its other retrying rows need not wait out their backoff."""
    session.execute(
        update(Delivery)
        .where(
            Delivery.target == target,
            Delivery.kind == kind,
            Delivery.status == DeliveryStatus.RETRYING,
            Delivery.next_attempt_at > now,
        )
        .values(next_attempt_at=now)
        .execution_options(synchronize_session=False)
    )
