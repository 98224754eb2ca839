"""Job rows: how a task claims its work so that a duplicate message cannot do it twice.

A message can arrive twice: the node publishes again after a crash between publish and
bookkeeping (`node.dicom.assembly`), and the broker redelivers when a worker dies mid-task (acks_late).
The task therefore claims an attempt first; the claim is refused when the work is done or
another live worker holds it, and the partial unique index on (study, attempt) settles two
claims racing each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from node.store.models import Job, Study
from node.store.states import JobKind, JobState, StudyState


@dataclass(frozen=True)
class Claim:
    job_id: int | None  # None: do nothing, `reason` says why
    reason: str


def claim_inference(
    session: Session, study_id: int, task_id: str | None, now: datetime, stale_after: timedelta
) -> Claim:
    """Claim the next inference attempt for `study_id` in the caller's transaction.

    A running attempt is taken over (marked dead) when it is this very message redelivered
    (same task id: its worker was lost) or has run past `stale_after` (the hard time limit,
    so its worker is certainly gone).
    """
    study = session.get(Study, study_id)
    if study is None:
        return Claim(None, f"study {study_id} does not exist")
    if study.state is not StudyState.QUEUED:
        return Claim(None, f"study {study_id} is {study.state}, not queued")
    attempts = list(
        session.scalars(
            select(Job).where(Job.study_id == study_id, Job.kind == JobKind.INFER).order_by(Job.attempt)
        )
    )
    for job in attempts:
        if job.state is JobState.SUCCEEDED:
            return Claim(None, f"study {study_id} was already inferred (job {job.id})")
        if job.state is not JobState.RUNNING:
            continue
        if job.celery_task_id == task_id:
            _bury(job, now, "its worker was lost; the message was redelivered")
        elif job.started_at < now - stale_after:
            _bury(job, now, "no result within the hard time limit")
        else:
            return Claim(None, f"study {study_id} is being inferred by job {job.id}")
    job = Job(
        study_id=study_id,
        kind=JobKind.INFER,
        attempt=(attempts[-1].attempt + 1) if attempts else 1,
        celery_task_id=task_id,
        state=JobState.RUNNING,
        started_at=now,
    )
    try:
        with session.begin_nested():
            session.add(job)
    except IntegrityError:
        return Claim(None, f"study {study_id}: a concurrent duplicate claimed this attempt first")
    return Claim(job.id, f"attempt {job.attempt}")


def finish_job(
    session: Session, job_id: int, state: JobState, now: datetime, error: str | None = None
) -> None:
    job = session.get_one(Job, job_id)
    job.state = state
    job.error = error
    job.ended_at = now


def _bury(job: Job, now: datetime, reason: str) -> None:
    job.state = JobState.DEAD
    job.error = reason
    job.ended_at = now
