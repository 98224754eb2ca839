"""The node's delivery loop: the outbox's safety net, and the pace of sends to a PACS or RIS that fails.

On the embedded node a report's deliveries are sent by the inference task that drafted it, right
after its commit; this loop sends what that leaves: rows to retry (their peer did not take them)
when they come due, and fresh rows no worker took within FRESH_GRACE_S (its send raised, its process
died). Until it first has such work it does not import the outbox: its message builders and what
they load at their first message (highdicom's tables of the standard alone are ~70 MB) would stay in
the node's process for nothing while the worker does the sending.

Elsewhere (Redis) the task publishes the report to an "io" worker and this loop takes fresh rows at
once too, as a second sender beside the "io" workers (the outbox's claims keep them from sending a
row twice).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session, sessionmaker

from node.config.settings import Settings
from node.store.models import Delivery, utcnow
from node.store.states import DeliveryStatus

if TYPE_CHECKING:
    from node.delivery.outbox import Outbox

log = logging.getLogger(__name__)

# How long a fresh row is its worker's to send (it claims it milliseconds after its commit).
FRESH_GRACE_S = 5.0


def left_to_the_loop(session: Session, now: datetime, grace: timedelta) -> bool:
    """A row is due that no worker will send: one to retry, or a fresh one older than `grace`."""
    due = or_(Delivery.next_attempt_at.is_(None), Delivery.next_attempt_at <= now)
    left = or_(
        Delivery.status == DeliveryStatus.RETRYING,
        and_(Delivery.status == DeliveryStatus.PENDING, Delivery.created_at <= now - grace),
    )
    return session.scalar(select(Delivery.id).where(due, left).limit(1)) is not None


class DeliveryLoop:
    """One tick: nothing unless `left_to_the_loop`, then the outbox's tick over everything due."""

    def __init__(self, sessions: sessionmaker[Session], settings: Settings) -> None:
        self.sessions = sessions
        self.settings = settings
        self.grace = timedelta(seconds=FRESH_GRACE_S if settings.embedded_broker else 0)
        self._outbox: Outbox | None = None

    def tick(self) -> None:
        with self.sessions() as session:
            if not left_to_the_loop(session, utcnow(), self.grace):
                return
        self.outbox.run_due()

    @property
    def outbox(self) -> Outbox:
        if self._outbox is None:
            from node.delivery.outbox import Outbox  # the message builders: only once there is work

            log.info("the delivery loop has deliveries no worker sent; sending them")
            self._outbox = Outbox(self.sessions, self.settings)
        return self._outbox
