"""Read-only questions the operator asks about the node (the admin CLI renders the answers)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from node.store.models import Association, Instance, Study
from node.store.states import AssociationOutcome, StudyState


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
    query = select(Study, instance_count).order_by(Study.updated_at.desc(), Study.id.desc()).limit(limit)
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
        )
        for study, count in session.execute(query)
    ]
