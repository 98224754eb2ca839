"""`echo-admin resend STUDY`: send a study's newest report again to the PACS and RIS configured now.

Each configured destination whose message was not delivered (pending, retrying, failed, held)
gets its delivery row reset (pending, attempts 0, due now, errors cleared, its retry horizon
started again) or, if the report has none of that kind yet, a new row; what a destination already
accepted is left alone unless the operator asks for it (`include_delivered`), so a resend after a
PACS outage does not put a duplicate ORU in the RIS. A reset row keeps its SR SOP
Instance UID and HL7 control id, so the PACS replaces the SR it may already hold and the RIS can
recognise the message. A study that failed (a delivery refused, or given up) goes back to
"inferred" through the state machine (failed -> queued -> inferred, both audited), so the outbox
can settle it again; so does a delivered study when something is sent again (a resend that then
fails must not leave it showing delivered).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from node.config.settings import Settings
from node.delivery.messages import destinations, new_delivery
from node.store.models import Delivery, Report, Study
from node.store.states import DeliveryStatus, StudyState
from node.store.transitions import transition


class ResendError(ValueError):
    """The study cannot be resent; the message is one line for the operator."""


@dataclass
class ResendResult:
    study_id: int
    report_id: int
    reset: list[str] = field(default_factory=list)  # "SR to PACS@host:104 (was failed)"
    created: list[str] = field(default_factory=list)
    untouched: list[str] = field(default_factory=list)  # rows of a kind no longer configured
    already_delivered: list[str] = field(default_factory=list)  # accepted already; left alone
    state: StudyState = StudyState.INFERRED


def find_study(session: Session, reference: str) -> Study:
    """A study by database id, Study Instance UID or accession number (which must be unambiguous)."""
    reference = reference.strip()
    if not reference:
        raise ResendError("give a study id, Study Instance UID or accession number")
    if reference.isdigit():
        study = session.get(Study, int(reference))
        if study is not None:
            return study
    study = session.scalars(select(Study).where(Study.study_instance_uid == reference)).first()
    if study is not None:
        return study
    matches = list(
        session.scalars(select(Study).where(Study.accession_number == reference).order_by(Study.id))
    )
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        ids = ", ".join(str(match.id) for match in matches)
        raise ResendError(f"accession {reference} names {len(matches)} studies (ids {ids}); give the id")
    raise ResendError(f"no study with id, Study Instance UID or accession number {reference!r}")


def resend_report(
    session: Session, settings: Settings, reference: str, now: datetime, *, include_delivered: bool = False
) -> ResendResult:
    """Reset or create the delivery rows of `reference`'s newest report, in the caller's transaction."""
    wanted = destinations(settings)
    if not wanted:
        raise ResendError("neither ECHO_PACS nor ECHO_RIS is set: there is nowhere to resend to")
    study = find_study(session, reference)
    report = session.scalars(
        select(Report).where(Report.study_id == study.id).order_by(Report.created_at.desc(), Report.id.desc())
    ).first()
    if report is None:
        raise ResendError(f"study {study.id} has no report to resend (it is {study.state})")
    result = ResendResult(study.id, report.id)
    rows = {row.kind: row for row in session.scalars(select(Delivery).where(Delivery.report_id == report.id))}
    for kind, target in wanted.items():
        label = f"{kind.value.upper()} to {target}"
        row = rows.get(kind)
        if row is None:
            session.add(new_delivery(report.id, kind, target, now))
            result.created.append(label)
            continue
        if row.status is DeliveryStatus.DELIVERED and not include_delivered:
            result.already_delivered.append(label)
            continue
        result.reset.append(f"{label} (was {row.status.value})")
        row.target = target
        row.status = DeliveryStatus.PENDING
        row.attempts = 0
        row.created_at = now  # the retry horizon starts again
        row.next_attempt_at = now
        row.last_error = row.ack_code = row.ack_text = None
        row.updated_at = now
    result.untouched = [
        f"{row.kind.value.upper()} to {row.target}" for kind, row in rows.items() if kind not in wanted
    ]
    sending = bool(result.reset or result.created)
    if study.state is StudyState.FAILED or (study.state is StudyState.DELIVERED and sending):
        # The study is "inferred" again until what goes out now settles it: a resend that fails
        # leaves it failed, not still "delivered" from the last time.
        transition(session, study, StudyState.QUEUED, "operator resend")
        transition(session, study, StudyState.INFERRED, f"report {report.id} sent again")
    session.flush()
    result.state = study.state
    return result
