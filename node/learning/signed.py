"""Signed reports in: stored once, matched to their study, corrections kept as history.

Whatever brings a signed report (the inbound HL7 listener, `echo-admin import`) hands it over as a
`SignedReportIn` to `store_signed`, which

- stores it once: a message seen again under the same (source, message key) is a duplicate and
  changes nothing (a RIS that resends after a lost ACK must not create a second row);
- keeps the history: a report for an accession that already has a current signed report replaces
  it (the old row names its replacement in `replaced_by_id`); the newest is the one that counts;
- matches it to a study: by accession number first, then by Study Instance UID. One that arrives
  before its study stays unmatched, and `match_pending` (run when studies arrive, and by the serve
  loop) matches it later.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from node.store.models import SignedReport, Study, utcnow
from node.store.states import SignedSource

FINAL_STATUSES = ("F", "C")  # OBR-25 / OBX-11: final, corrected


@dataclass(frozen=True, kw_only=True)
class SignedReportIn:
    """A signed report as read from a message or an archive row, before it is stored."""

    source: SignedSource
    message_key: str  # unique per source: the same key again is the same message
    message_type: str  # "ORU^R01", "MDM^T02", "import"
    findings: str
    impression: str
    text: str
    result_status: str = "F"
    accession_number: str | None = None
    study_instance_uid: str | None = None
    sending_facility: str | None = None
    signed_at: datetime | None = None
    raw: str | None = None
    parsed: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.message_key:
            raise ValueError("a signed report needs a message key")
        if self.result_status not in FINAL_STATUSES:
            raise ValueError(f"a signed report is final (F) or corrected (C), not {self.result_status!r}")
        if not (self.accession_number or self.study_instance_uid):
            raise ValueError("a signed report needs an accession number or a Study Instance UID")
        if not (self.findings.strip() or self.impression.strip()):
            raise ValueError("a signed report needs findings or an impression")


@dataclass(frozen=True)
class Stored:
    row: SignedReport
    duplicate: bool  # the message was stored before; nothing changed
    replaced: SignedReport | None  # the previous current report for the accession, now history


def store_signed(session: Session, incoming: SignedReportIn, now: datetime | None = None) -> Stored:
    """Store `incoming` once, replace the accession's current report, match it; flushes, no commit."""
    now = now or utcnow()
    _one_store_per_order(session, incoming.accession_number or incoming.study_instance_uid)
    existing = _by_key(session, incoming.source, incoming.message_key)
    if existing is not None:
        return Stored(existing, duplicate=True, replaced=None)
    row = SignedReport(
        source=incoming.source,
        message_key=incoming.message_key,
        message_type=incoming.message_type,
        sending_facility=incoming.sending_facility,
        accession_number=incoming.accession_number or None,
        study_instance_uid=incoming.study_instance_uid or None,
        result_status=incoming.result_status,
        findings=incoming.findings,
        impression=incoming.impression,
        text=incoming.text,
        signed_at=incoming.signed_at,
        received_at=now,
        raw=incoming.raw,
        parsed=incoming.parsed or None,
    )
    previous = current_for(session, row.accession_number, row.study_instance_uid)
    try:
        with session.begin_nested():
            session.add(row)
    except IntegrityError:  # a concurrent store of the same message won
        found = _by_key(session, incoming.source, incoming.message_key)
        if found is None:
            raise
        return Stored(found, duplicate=True, replaced=None)
    if previous is not None:
        previous.replaced_by_id = row.id
    match(session, row, now)
    session.flush()
    return Stored(row, duplicate=False, replaced=previous)


def _one_store_per_order(session: Session, order: str | None) -> None:
    """On PostgreSQL, wait for any other transaction storing a report of this order (accession, else
    Study Instance UID) to end: two reports of one order arriving at once (a final and its
    correction, on two HL7 connections) would otherwise both read "no current report" and both stay
    current. The lock ends with the transaction. SQLite needs none: its write lock serialises the
    transactions, and one that read before the other's commit fails to write rather than write on
    what it read."""
    if order and session.get_bind().dialect.name == "postgresql":
        key = func.hashtextextended(f"echo signed report {order}", 0)
        session.execute(select(func.pg_advisory_xact_lock(key)))


def current_for(session: Session, accession_number: str | None, study_uid: str | None) -> SignedReport | None:
    """The signed report that counts for an order: the newest not replaced, by accession, else study UID."""
    for column, value in (
        (SignedReport.accession_number, accession_number),
        (SignedReport.study_instance_uid, study_uid),
    ):
        if value:
            query = (
                select(SignedReport)
                .where(column == value, SignedReport.replaced_by_id.is_(None))
                .order_by(SignedReport.id.desc())
            )
            found = session.scalars(query).first()
            if found is not None:
                return found
    return None


def match(session: Session, row: SignedReport, now: datetime | None = None) -> Study | None:
    """Attach `row` to its study (accession first, then Study Instance UID); None while it has none.

    An accession shared by several studies (a site reusing accessions across years) is matched to
    the most recent one that also agrees on the Study Instance UID when the report carries one.
    """
    study = find_study(session, row.accession_number, row.study_instance_uid)
    if study is not None:
        row.study_id = study.id
        row.matched_at = now or utcnow()
    return study


def find_study(session: Session, accession_number: str | None, study_uid: str | None) -> Study | None:
    if accession_number:
        query = select(Study).where(Study.accession_number == accession_number)
        if study_uid:
            with_uid = session.scalars(query.where(Study.study_instance_uid == study_uid)).first()
            if with_uid is not None:
                return with_uid
        found = session.scalars(query.order_by(Study.id.desc())).first()
        if found is not None:
            return found
    if study_uid:
        return session.scalars(select(Study).where(Study.study_instance_uid == study_uid)).first()
    return None


def match_pending(session: Session, limit: int = 500, now: datetime | None = None) -> list[SignedReport]:
    """Match current signed reports that still wait for a study that has now arrived; returns them.

    Only reports whose accession or Study Instance UID a stored study carries are read, so reports
    whose study never comes (another site's orders) cost nothing and never crowd out newer ones.
    """
    by_accession = select(Study.id).where(
        SignedReport.accession_number.is_not(None), Study.accession_number == SignedReport.accession_number
    )
    by_uid = select(Study.id).where(
        SignedReport.study_instance_uid.is_not(None),
        Study.study_instance_uid == SignedReport.study_instance_uid,
    )
    query = (
        select(SignedReport)
        .where(SignedReport.study_id.is_(None), SignedReport.replaced_by_id.is_(None))
        .where(by_accession.exists() | by_uid.exists())
        .order_by(SignedReport.id)
        .limit(limit)
    )
    matched = [row for row in session.scalars(query).all() if match(session, row, now) is not None]
    session.flush()
    return matched


def _by_key(session: Session, source: SignedSource, key: str) -> SignedReport | None:
    query = select(SignedReport).where(SignedReport.source == source, SignedReport.message_key == key)
    return session.scalars(query).first()
