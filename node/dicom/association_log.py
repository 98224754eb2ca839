"""The associations table as an audit log: who connected from where, what they sent, how it ended.

An association the SCP admits costs no database write: its row is inserted with its first instance,
in that instance's transaction (`insert_row`, called by `node.dicom.ingest`), or when it ends if it
stored nothing. Assembly holds a study back while an association that delivered one of its instances
is open; such an association always has its row, since the row comes with the instance.

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

from sqlalchemy import insert, update
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

    id: int | None  # None until its row is written (with its first instance, or when it ends)
    peer: Peer | None = None
    started_at: datetime | None = None
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
        """Record an association about to be accepted now (raises SQLAlchemyError: then refuse it)."""
        with self.sessions.begin() as session:
            live = self.admitted(peer)
            live.id = insert_row(session, live)
            return live

    def admitted(self, peer: Peer) -> LiveAssociation:
        """An accepted association, in memory only: its row comes with its first instance (`insert_row`)
        or when it ends."""
        return LiveAssociation(None, peer, self.clock())

    def rejected(self, peer: Peer, reason: str) -> None:
        log.warning("rejected association from %s@%s:%d: %s", peer.calling_ae, peer.host, peer.port, reason)
        now = self.clock()
        try:
            with self.sessions.begin() as session:
                row = _row(peer, AssociationOutcome.REJECTED, now, reason) | {"ended_at": now}
                session.execute(insert(Association).values(**row))
        except SQLAlchemyError as error:
            log.error("could not record the rejection: database error %s", type(error).__name__)

    def ended(self, live: LiveAssociation, outcome: AssociationOutcome, reason: str | None = None) -> None:
        closing = _Closing(live, outcome, reason, self.clock())
        written = self._write(closing)
        log.info(
            "association %s %s: %d stored, %d failed%s",
            live.id if live.id is not None else "(not recorded)",
            outcome,
            live.stored,
            live.failed,
            f" ({reason})" if reason else "",
        )
        if not written:
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
        """The closing values on the association's row; for one that stored nothing, its whole row."""
        live = closing.live
        values = {
            "ended_at": closing.at,
            "outcome": closing.outcome,
            "reason": closing.reason,
            "files_stored": live.stored,
            "files_failed": live.failed,
        }
        try:
            with self.sessions.begin() as session:
                if live.id is None:
                    inserted = insert_row(session, live, **values)
                else:
                    inserted = None
                    session.execute(
                        update(Association)
                        .where(Association.id == live.id)
                        .values(**values)
                        .execution_options(synchronize_session=False)
                    )
            if inserted is not None:
                live.id = inserted  # only once committed: a failed write is retried as an insert
            return True
        except SQLAlchemyError as error:
            log.error("could not close association %s: database error %s", live.id, type(error).__name__)
            return False


def insert_row(session: Session, live: LiveAssociation, **values: object) -> int:
    """Insert the row of an admitted association (`values` override the open row's); returns its id."""
    assert live.peer is not None and live.started_at is not None, "not an admitted association"
    row = _row(live.peer, AssociationOutcome.ACCEPTED, live.started_at, None) | values
    return session.execute(insert(Association).values(**row).returning(Association.id)).scalar_one()


def _row(peer: Peer, outcome: AssociationOutcome, at: datetime, reason: str | None) -> dict[str, object]:
    return {
        "calling_ae": peer.calling_ae[:16],
        "called_ae": peer.called_ae[:16],
        "host": peer.host[:255],
        "port": peer.port,
        "started_at": at,
        "outcome": outcome,
        "reason": reason,
        "files_stored": 0,
        "files_failed": 0,
    }
