"""The only way a study changes state: `transition()`, checked against STUDY_TRANSITIONS and audited."""

from __future__ import annotations

from sqlalchemy import update
from sqlalchemy.orm import Session

from node.store.models import Study, StudyEvent, utcnow
from node.store.states import STUDY_TRANSITIONS, StudyState


class IllegalTransition(RuntimeError):
    """A move the state machine does not allow, or a study that changed state under us."""


def record_creation(session: Session, study: Study, reason: str) -> StudyEvent:
    """The audit row for a study's first state (it has no 'from')."""
    event = StudyEvent(study=study, from_state=None, to_state=study.state, reason=reason, at=utcnow())
    session.add(event)
    return event


def transition(session: Session, study: Study, to: StudyState | str, reason: str | None = None) -> StudyEvent:
    """Move `study` to `to` and add its study_events row, in the caller's transaction.

    The UPDATE is conditional on the state the caller saw, so two processes racing to move the
    same study cannot both succeed: the loser gets `IllegalTransition` and its transaction
    should roll back.
    """
    target = StudyState(to)
    current = study.state
    if target not in STUDY_TRANSITIONS[current]:
        allowed = ", ".join(sorted(STUDY_TRANSITIONS[current])) or "none"
        raise IllegalTransition(
            f"study {study.id}: {current} -> {target} is not allowed (from {current}: {allowed})"
        )
    now = utcnow()
    values: dict[str, object] = {"state": target, "updated_at": now}
    if target is StudyState.SKIPPED:
        values["skip_reason"] = reason
    elif current is StudyState.SKIPPED:  # reopened: the old reason stays in study_events only
        values["skip_reason"] = None
    result = session.execute(
        update(Study)
        .where(Study.id == study.id, Study.state == current)
        .values(**values)
        .execution_options(synchronize_session="fetch")
    )
    if result.rowcount != 1:
        raise IllegalTransition(f"study {study.id}: state changed from {current} by another process")
    event = StudyEvent(study_id=study.id, from_state=current, to_state=target, reason=reason, at=now)
    session.add(event)
    return event
