"""The dead-letter record: what stays in the database when an inference task gives up.

Redis has no dead-letter exchange, and a message acknowledged after its last failure is gone; so
the task's final failure is written where operators look: the attempt's job row becomes "dead"
with the error, and the study moves to "failed" with the reason (`echo-admin studies --state
failed` lists it; an operator can re-queue it).
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from node.store.models import Job, Study
from node.store.states import JobKind, JobState, StudyState
from node.store.transitions import transition

log = logging.getLogger(__name__)


def record_dead_letter(
    sessions: sessionmaker[Session], study_id: int, task_id: str | None, reason: str, now: datetime
) -> bool:
    """Bury the task's newest unfinished attempt and fail its study; False if there was nothing to do."""
    changed = False
    with sessions.begin() as session:
        job = session.scalars(
            select(Job)
            .where(Job.study_id == study_id, Job.kind == JobKind.INFER, Job.celery_task_id == task_id)
            .order_by(Job.attempt.desc())
            .limit(1)
        ).first()
        if job is not None and job.state in (JobState.RUNNING, JobState.FAILED):
            job.state, job.error, job.ended_at = JobState.DEAD, reason, now
            changed = True
        study = session.get(Study, study_id)
        if study is not None and study.state is StudyState.QUEUED:
            transition(session, study, StudyState.FAILED, f"inference gave up: {reason}")
            changed = True
    if changed:
        log.error("study %d dead-lettered: %s", study_id, reason)
    return changed
