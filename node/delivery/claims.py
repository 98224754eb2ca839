"""The outbox's leases on delivery rows: claiming the due ones, handing them back unsent.

A claim is one conditional UPDATE per row that pushes next_attempt_at a lease ahead and counts the
attempt, so two runners (the node's loop and an "io" worker) never send the same row at once, and a
runner that dies mid-send leaves a row that comes due again when its lease ends. Each function works
in the caller's transaction.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from node.store.models import Delivery
from node.store.states import DeliveryStatus

DUE = (DeliveryStatus.PENDING, DeliveryStatus.RETRYING)


def claim_due(
    session: Session, now: datetime, lease: timedelta, limit: int, report_id: int | None = None
) -> list[int]:
    """Claim up to `limit` due rows (only `report_id`'s when given), oldest due first; their ids."""
    due = or_(Delivery.next_attempt_at.is_(None), Delivery.next_attempt_at <= now)
    query = (
        select(Delivery.id)
        .where(Delivery.status.in_(DUE), due)
        .order_by(Delivery.next_attempt_at, Delivery.id)
        .limit(limit)
    )
    if report_id is not None:
        query = query.where(Delivery.report_id == report_id)
    claimed = []
    for delivery_id in session.scalars(query).all():
        taken = session.execute(
            update(Delivery)
            .where(Delivery.id == delivery_id, Delivery.status.in_(DUE), due)
            .values(next_attempt_at=now + lease, attempts=Delivery.attempts + 1, updated_at=now)
            .execution_options(synchronize_session=False)
        )
        if taken.rowcount == 1:
            claimed.append(delivery_id)
    return claimed


def take_back_stopped(session: Session, claimed: list[int]) -> set[int]:
    """The claimed rows stopped since (no longer due: their draft was superseded), with the attempt
    their claim counted taken back."""
    stopped = set(
        session.scalars(select(Delivery.id).where(Delivery.id.in_(claimed), Delivery.status.not_in(DUE)))
    )
    if stopped:
        session.execute(
            update(Delivery)
            .where(Delivery.id.in_(stopped))
            .values(attempts=Delivery.attempts - 1)
            .execution_options(synchronize_session=False)
        )
    return stopped


def release(session: Session, claimed: list[int], until: datetime) -> None:
    """Hand claimed rows back unsent, their attempt not counted, due again at `until`."""
    session.execute(
        update(Delivery)
        .where(Delivery.id.in_(claimed))
        .values(next_attempt_at=until, attempts=Delivery.attempts - 1)
        .execution_options(synchronize_session=False)
    )
