"""One inbound message in, one ACK out: read it, refuse it or store it, and say so.

`Receiver.answer(payload)` is everything the listener does with a frame, without the sockets:
`node.hl7.parse.read_message` reads it (and the sending facility is checked against the allow-list),
`node.learning.signed.store_signed` stores it once and matches it, the transaction commits, and only
then is AA answered. A report the database cannot take now is answered AE, so the RIS sends it
again; nothing is acknowledged that is not committed. A message sent again (same MSH-4 and MSH-10)
is answered AA and stored once.

Two reports for the same order arriving at the same moment on two connections are stored one after
the other (a lock per accession / Study Instance UID), so the second replaces the first as a
correction should, instead of both becoming the order's current report.

Logs name the sending facility, the control id and the node's own row id, never the accession
number, the Study Instance UID or the text.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from zlib import crc32

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from node.hl7.ack import AckCode, Condition, OwnNames, Refusal, build_ack
from node.hl7.parse import Reading, read_header, read_message
from node.learning.signed import SignedReportIn, store_signed

log = logging.getLogger(__name__)

ORDER_LOCKS = 64


@dataclass(frozen=True)
class Answer:
    ack: str  # ER7
    code: AckCode
    reason: str = ""


class FacilityPolicy:
    """The MSH-4 allow-list; empty admits every facility."""

    def __init__(self, allowed: Iterable[str] = ()) -> None:
        self.allowed = frozenset(facility.strip().upper() for facility in allowed if facility.strip())

    @property
    def open_to_all(self) -> bool:
        return not self.allowed

    def admits(self, facility: str) -> bool:
        return self.open_to_all or facility.strip().upper() in self.allowed


class Receiver:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        policy: FacilityPolicy | None = None,
        own: OwnNames | None = None,
    ) -> None:
        self.sessions = sessions
        self.policy = policy or FacilityPolicy()
        self.own = own or OwnNames()
        self._order_locks = [threading.Lock() for _ in range(ORDER_LOCKS)]

    def answer(self, payload: bytes) -> Answer:
        try:
            reading = read_message(payload, self.policy.admits)
        except Exception as error:  # a bug on some odd message: still an answer, and the type logged
            log.error("HL7 frame not read: %s; answered AE", type(error).__name__)
            refusal = Refusal(
                AckCode.ERROR, Condition.APPLICATION_INTERNAL_ERROR, "internal error reading the message"
            )
            return self._refused(Reading(None), refusal, logged=True)
        if reading.refusal is not None:
            return self._refused(reading, reading.refusal)
        assert reading.report is not None
        try:
            row_id, duplicate = self._store(reading.report)
        except Exception as error:  # SQLAlchemyError mostly: unreachable, read-only, out of space
            log.warning(
                "HL7 %s from %r (control id %r) not stored: %s (%s); answered AE",
                reading.report.message_type,
                reading.report.sending_facility,
                _control_id(reading),
                _kind(error),
                type(error).__name__,
            )
            refusal = Refusal(
                AckCode.ERROR,
                Condition.APPLICATION_INTERNAL_ERROR,
                f"the node cannot store the report now ({_kind(error)}: {type(error).__name__}); "
                "send it again later",
            )
            return self._refused(reading, refusal, logged=True)
        log.info(
            "signed report %d %s from %r (%s, control id %r)",
            row_id,
            "was stored before (duplicate)" if duplicate else "stored",
            reading.report.sending_facility,
            reading.report.message_type,
            _control_id(reading),
        )
        ack = build_ack(reading.header, AckCode.ACCEPT, own=self.own)
        return Answer(ack, AckCode.ACCEPT, "duplicate" if duplicate else "")

    def refuse(self, head: bytes, refusal: Refusal) -> Answer:
        """The answer to a frame refused before it was read whole (too large): its MSH if readable."""
        try:
            header, _ = read_header(head.decode("latin-1"))
        except Refusal:
            header = None
        return self._refused(Reading(header), refusal)

    def _store(self, report: SignedReportIn) -> tuple[int, bool]:
        key = report.accession_number or report.study_instance_uid or ""
        with self._order_locks[crc32(key.encode()) % ORDER_LOCKS], self.sessions.begin() as session:
            stored = store_signed(session, report)
            return stored.row.id, stored.duplicate

    def _refused(self, reading: Reading, refusal: Refusal, *, logged: bool = False) -> Answer:
        header = reading.header
        if not logged:
            log.warning(
                "HL7 %s from %r (control id %r) answered %s: %s %s",
                header.message_type if header else "frame",
                header.sending_facility if header else None,
                header.control_id if header else None,
                refusal.code.value,
                refusal.condition.value,
                refusal.condition.text,
            )
        ack = build_ack(header, refusal.code, refusal.reason, refusal.condition, own=self.own)
        return Answer(ack, refusal.code, refusal.reason)


def _kind(error: Exception) -> str:
    return "database error" if isinstance(error, SQLAlchemyError) else "internal error"


def _control_id(reading: Reading) -> str:
    return reading.header.control_id if reading.header else ""
