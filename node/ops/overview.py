"""Read-only questions the operator asks about the node (the admin CLI renders the answers)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from echo.runtime.result import AUTHOR_MARK
from node.store.models import Association, Delivery, Instance, Job, Report, Study, StudyEvent
from node.store.states import DRAFT_GATE_HELD, AssociationOutcome, DeliveryStatus, JobKind, StudyState


@dataclass(frozen=True)
class AssociationSummary:
    calling_ae: str
    host: str
    outcome: AssociationOutcome
    started_at: datetime
    ended_at: datetime | None
    files_stored: int
    files_failed: int
    reason: str | None


@dataclass(frozen=True)
class StudyRow:
    id: int
    study_instance_uid: str
    accession_number: str | None
    modality: str | None
    state: StudyState
    skip_reason: str | None
    instances: int
    first_received_at: datetime
    last_received_at: datetime
    updated_at: datetime
    failure_reason: str | None = None  # the reason of its newest move to failed, when it is failed
    identity_conflict: str | None = None  # "instances disagree on <attributes>"

    @property
    def note(self) -> str:
        """Why the study is where it is: the skip or failure reason, and any identity conflict."""
        parts = [
            self.skip_reason if self.state is StudyState.SKIPPED else None,
            self.failure_reason if self.state is StudyState.FAILED else None,
            self.identity_conflict,
        ]
        return "; ".join(part for part in parts if part)


def counts_by_state(session: Session) -> dict[StudyState, int]:
    """Every state, zero included, so the table always has the same rows."""
    found = {
        state: count
        for state, count in session.execute(select(Study.state, func.count()).group_by(Study.state))
    }
    return {state: found.get(state, 0) for state in StudyState}


def last_association(session: Session) -> AssociationSummary | None:
    row = session.scalars(select(Association).order_by(Association.id.desc()).limit(1)).first()
    if row is None:
        return None
    return AssociationSummary(
        row.calling_ae,
        row.host,
        row.outcome,
        row.started_at,
        row.ended_at,
        row.files_stored,
        row.files_failed,
        row.reason,
    )


def open_associations(session: Session) -> int:
    return session.scalar(select(func.count()).where(Association.ended_at.is_(None))) or 0


def recent_studies(session: Session, state: StudyState | None, limit: int) -> list[StudyRow]:
    """Newest first (by last activity)."""
    instance_count = (
        select(func.count(Instance.id))
        .where(Instance.study_id == Study.id)
        .correlate(Study)
        .scalar_subquery()
    )
    failure_reason = (
        select(StudyEvent.reason)
        .where(StudyEvent.study_id == Study.id, StudyEvent.to_state == StudyState.FAILED)
        .order_by(StudyEvent.id.desc())
        .limit(1)
        .correlate(Study)
        .scalar_subquery()
    )
    query = (
        select(Study, instance_count, failure_reason)
        .order_by(Study.updated_at.desc(), Study.id.desc())
        .limit(limit)
    )
    if state is not None:
        query = query.where(Study.state == state)
    return [
        StudyRow(
            study.id,
            study.study_instance_uid,
            study.accession_number,
            study.modality,
            study.state,
            study.skip_reason,
            count,
            study.first_received_at,
            study.last_received_at,
            study.updated_at,
            failure_reason if study.state is StudyState.FAILED else None,
            study.identity_conflict,
        )
        for study, count, failure_reason in session.execute(query)
    ]


def draft_gate_counts(session: Session) -> dict[str, int]:
    """The draft gate's decisions: drafts stored as first decoded ("passed"), stored after a re-decode
    ("redecoded"), and drafts never stored because they stayed broken ("held")."""
    counts = {"passed": 0, "redecoded": 0, "held": 0}
    for gate, count in session.execute(
        select(Report.gate, func.count()).where(Report.gate.is_not(None)).group_by(Report.gate)
    ):
        counts[gate] = count
    counts["held"] = (
        session.scalar(
            select(func.count())
            .select_from(Job)
            .where(Job.kind == JobKind.INFER, Job.error.like(f"{DRAFT_GATE_HELD}:%"))
        )
        or 0
    )
    return counts


def drafts_by_redecode_model(session: Session) -> int:
    """Drafts stored as the re-decode model (the teacher) wrote them: their decoding names it
    ("multistep steps=8 tau=0.85 by teacher VERSION"). A share of the re-decoded ones; each cost the
    slower teacher's decoding, which is what a site sizes its workers for."""
    authored = Report.decoding.like(f"%{AUTHOR_MARK}%")
    return session.scalar(select(func.count()).select_from(Report).where(authored)) or 0


@dataclass(frozen=True)
class OutboxSummary:
    counts: dict[DeliveryStatus, int]  # delivery rows per status
    oldest_waiting: datetime | None  # when the oldest row not yet delivered (pending/retrying) was queued
    next_try: datetime | None  # the soonest next attempt among them


def outbox_summary(session: Session) -> OutboxSummary:
    """The messages the outbox holds: what waits (parked while its PACS or RIS is down), what an
    operator must look at (held, failed)."""
    counts = {status: 0 for status in DeliveryStatus}
    for status, count in session.execute(select(Delivery.status, func.count()).group_by(Delivery.status)):
        counts[status] = count
    waiting = Delivery.status.in_((DeliveryStatus.PENDING, DeliveryStatus.RETRYING))
    oldest, soonest = session.execute(
        select(func.min(Delivery.created_at), func.min(Delivery.next_attempt_at)).where(waiting)
    ).one()
    return OutboxSummary(counts, oldest, soonest)
