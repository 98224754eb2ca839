"""Drafting a study again when its frontal view arrives after a draft read from something else.

The model reads frontal chest radiographs. A study can still be drafted from another view: from a
lateral alone when the site allows it (ECHO_DRAFT_LATERAL_ONLY), or from an image whose header marks
no view at all. When a frontal image of such a study arrives later, the draft is stale:

1. ingest (`node.dicom.ingest`) moves the study inferred/delivered -> queued with `REDRAFT_REASON`
   (`request_redraft`), enqueued_at NULL, so the assembly loop publishes it;
2. inference (`worker.inference`) writes the next revision of the report, superseding the draft read
   from the other view, and stops what of the old draft has not gone out yet;
3. the outbox sends the new draft as a corrected preliminary (`node.delivery.messages`).

Any other late instance (a lateral after a frontal draft, a second frontal) is stored and changes
nothing. "Read from a non-frontal" is the worker's own verdict at the time, kept in reports.view_reason:
`worker.views.pick_frontal` starts the reason with `NON_FRONTAL_MARK` exactly when nothing marked the
image it chose frontal (tests/worker pin the two together; node does not import worker).

A study back in queued after a draft has succeeded inference attempts of its earlier round;
`redraft_requested` tells the claim and the reconciler that those do not mean "already done".
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from node.store.models import Report, Study, StudyEvent
from node.store.states import StudyState
from node.store.transitions import transition

REDRAFT_REASON = "frontal view arrived after a draft read from a non-frontal view: re-drafting"
# Studies in these states have a draft a late frontal may correct.
REDRAFT_FROM = frozenset({StudyState.INFERRED, StudyState.DELIVERED})
NON_FRONTAL_MARK = "fallback:"


def read_from_non_frontal(view_reason: str | None) -> bool:
    """Whether a report's view reason says the image it was read from is not a frontal view."""
    return bool(view_reason) and view_reason.startswith(NON_FRONTAL_MARK)  # type: ignore[union-attr]


def newest_report(session: Session, study_id: int) -> Report | None:
    """The study's current draft: its highest revision (the newest row among equals)."""
    return session.scalars(
        select(Report)
        .where(Report.study_id == study_id)
        .order_by(Report.revision.desc(), Report.id.desc())
        .limit(1)
    ).first()


def draft_needs_a_frontal(session: Session, study: Study) -> bool:
    """True when `study` has a draft and its newest one was read from a non-frontal view."""
    if study.state not in REDRAFT_FROM:
        return False
    report = newest_report(session, study.id)
    return report is not None and read_from_non_frontal(report.view_reason)


def request_redraft(session: Session, study: Study) -> None:
    """inferred/delivered -> queued, to be published by the assembly loop; in the caller's transaction."""
    transition(session, study, StudyState.QUEUED, REDRAFT_REASON)
    study.enqueued_at = None


def redraft_requested(session: Session, study_id: int) -> bool:
    """Whether the study's latest move into queued came from a draft (a re-draft round): its succeeded
    inference attempts then belong to the earlier round, not to the work queued now."""
    came_from = session.scalars(
        select(StudyEvent.from_state)
        .where(StudyEvent.study_id == study_id, StudyEvent.to_state == StudyState.QUEUED)
        .order_by(StudyEvent.id.desc())
        .limit(1)
    ).first()
    return came_from in REDRAFT_FROM
