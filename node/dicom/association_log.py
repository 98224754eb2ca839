"""The associations table as an audit log: who connected from where, what they sent, how it ended.

Closing rows that fail to be written (database briefly unavailable) are kept and retried by
`retry_pending`, because an association left open in the database holds its studies back from
assembly.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from node.store.models import Association, utcnow
from node.store.states import AssociationOutcome

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Peer:
    calling_ae: str
    called_ae: str
    host: str
    port: int


@dataclass
class LiveAssociation:
    """An accepted association and its counters, kept in memory until it ends."""

    id: int
    stored: int = 0
    failed: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count(self, stored: bool) -> None:
        with self._lock:
            if stored:
                self.stored += 1
            else:
                self.failed += 1


@dataclass(frozen=True)
class _Closing:
    live: LiveAssociation
    outcome: AssociationOutcome
    reason: str | None
    at: datetime


class AssociationLog:
    def __init__(self, sessions: sessionmaker[Session], clock: Callable[[], datetime] = utcnow) -> None:
        self.sessions = sessions
        self.clock = clock
        self._pending: list[_Closing] = []
        self._pending_lock = threading.Lock()

    def opened(self, peer: Peer) -> LiveAssociation:
        """Record an association about to be accepted (raises SQLAlchemyError: then refuse it)."""
        with self.sessions.begin() as session:
            row = _row(peer, AssociationOutcome.ACCEPTED, self.clock(), None)
            session.add(row)
            session.flush()
            return LiveAssociation(row.id)

    def rejected(self, peer: Peer, reason: str) -> None:
        log.warning("rejected association from %s@%s:%d: %s", peer.calling_ae, peer.host, peer.port, reason)
        now = self.clock()
        try:
            with self.sessions.begin() as session:
                row = _row(peer, AssociationOutcome.REJECTED, now, reason)
                row.ended_at = now
                session.add(row)
        except SQLAlchemyError as error:
            log.error("could not record the rejection: database error %s", type(error).__name__)

    def ended(self, live: LiveAssociation, outcome: AssociationOutcome, reason: str | None = None) -> None:
        closing = _Closing(live, outcome, reason, self.clock())
        log.info(
            "association %d %s: %d stored, %d failed%s",
            live.id,
            outcome,
            live.stored,
            live.failed,
            f" ({reason})" if reason else "",
        )
        if not self._write(closing):
            with self._pending_lock:
                self._pending.append(closing)

    def retry_pending(self) -> int:
        """Write closings that failed earlier; returns how many are still waiting."""
        with self._pending_lock:
            waiting, self._pending = self._pending, []
        still = [closing for closing in waiting if not self._write(closing)]
        with self._pending_lock:
            self._pending.extend(still)
            return len(self._pending)

    def close_orphans(self) -> int:
        """At start: associations a dead process left open are closed as aborted (their studies can finish).

        Assumes one SCP process per database, which is how the node is deployed.
        """
        with self.sessions.begin() as session:
            result = session.execute(
                update(Association)
                .where(Association.ended_at.is_(None))
                .values(
                    ended_at=self.clock(),
                    outcome=AssociationOutcome.ABORTED,
                    reason="the node stopped before the association ended",
                )
            )
        return result.rowcount

    def _write(self, closing: _Closing) -> bool:
        try:
            with self.sessions.begin() as session:
                session.execute(
                    update(Association)
                    .where(Association.id == closing.live.id)
                    .values(
                        ended_at=closing.at,
                        outcome=closing.outcome,
                        reason=closing.reason,
                        files_stored=closing.live.stored,
                        files_failed=closing.live.failed,
                    )
                )
            return True
        except SQLAlchemyError as error:
            log.error(
                "could not close association %d: database error %s", closing.live.id, type(error).__name__
            )
            return False


def _row(peer: Peer, outcome: AssociationOutcome, at: datetime, reason: str | None) -> Association:
    return Association(
        calling_ae=peer.calling_ae[:16],
        called_ae=peer.called_ae[:16],
        host=peer.host[:255],
        port=peer.port,
        started_at=at,
        outcome=outcome,
        reason=reason,
        files_stored=0,
        files_failed=0,
    )
