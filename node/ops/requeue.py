"""`echo-admin requeue`: a failed study goes back to the inference queue.

Only through the state machine's one move for it, failed -> queued, audited like every move, with
``enqueued_at`` cleared so the node's assembly loop publishes it within a second or so (the node
is the one place that talks to the broker for a study). Every other state is refused with what
to do instead. A failed study that already has a draft failed while delivering it: that is
`echo-admin resend`, not a new inference. A study whose instances disagree on the patient or the
accession is never drafted, so it is not re-queued either.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from node.store.models import Report, Study
from node.store.states import StudyState
from node.store.transitions import IllegalTransition, transition

REQUEUED_REASON = "re-queued by an operator (echo-admin requeue)"


class RequeueError(ValueError):
    """The study cannot be re-queued; one line for the operator, saying what to do instead."""


@dataclass
class RequeueResult:
    requeued: list[int] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # "study 7: ..." one line each


def _refusal(study: Study, has_report: bool) -> str | None:
    """Why `study` must not go back to the queue; None when it may."""
    state = study.state
    if state is StudyState.FAILED:
        if study.identity_conflict:
            return (
                f"study {study.id} is not re-queued: its instances disagree on {study.identity_conflict}, "
                "and such a study is never drafted"
            )
        if has_report:
            return (
                f"study {study.id} already has a draft (it failed while delivering it): "
                f"use `echo-admin resend {study.id}` to send it again"
            )
        return None
    if state is StudyState.QUEUED:
        return f"study {study.id} is already queued"
    if state in (StudyState.RECEIVED, StudyState.COMPLETE):
        return f"study {study.id} is still {state}: the node queues it by itself once it is complete"
    if state in (StudyState.INFERRED, StudyState.DELIVERED):
        return (
            f"study {study.id} is {state}: it has its draft; use `echo-admin resend {study.id}` "
            "to send it again"
        )
    if state is StudyState.SKIPPED:
        return (
            f"study {study.id} was skipped ({study.skip_reason or 'no reason recorded'}): "
            "the node does not draft it, and a skipped study cannot be re-queued"
        )
    return f"study {study.id} is {state}: only a failed study can be re-queued"


def _has_report(session: Session, study_id: int) -> bool:
    return session.scalar(select(Report.id).where(Report.study_id == study_id).limit(1)) is not None


def _requeue(session: Session, study: Study) -> None:
    transition(session, study, StudyState.QUEUED, REQUEUED_REASON)
    session.execute(
        update(Study)
        .where(Study.id == study.id)
        .values(enqueued_at=None)
        .execution_options(synchronize_session="fetch")
    )


def requeue_study(session: Session, study: Study) -> None:
    """Re-queue one failed study in the caller's transaction; raises RequeueError otherwise."""
    refusal = _refusal(study, _has_report(session, study.id))
    if refusal is not None:
        raise RequeueError(refusal)
    try:
        _requeue(session, study)
    except IllegalTransition as error:  # another process moved it between our read and our write
        raise RequeueError(str(error)) from None


def requeue_failed(session: Session) -> RequeueResult:
    """Re-queue every failed study that may be, in the caller's transaction; the rest are listed."""
    result = RequeueResult()
    for study in session.scalars(select(Study).where(Study.state == StudyState.FAILED).order_by(Study.id)):
        refusal = _refusal(study, _has_report(session, study.id))
        if refusal is not None:
            result.refused.append(refusal)
            continue
        try:
            with session.begin_nested():
                _requeue(session, study)
        except IllegalTransition as error:
            result.refused.append(str(error))
            continue
        result.requeued.append(study.id)
    return result
