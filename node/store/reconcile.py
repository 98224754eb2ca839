"""The reconciler: the database, not the broker, says what still needs doing.

A broker can lose a message (a Redis restarted without persistence, kombu's SQL transport when
the worker that fetched it is killed) and a process can die mid-inference leaving its attempt
"running" for ever. `reconcile()` looks at the rows only, in one transaction, and:

1. buries every running inference attempt whose process is provably gone (on this host, pid not
   alive; in the periodic pass only after a short grace, so the broker's own redelivery of the
   message goes first), whose heartbeat is older than the heartbeat timeout, or that ran past the
   hard limit;
2. fails a queued study whose last `max_dead_attempts` attempts all died with their process (a
   poison study: a crash in a native decoder, the OOM killer), with the reason;
3. marks for publishing again (``enqueued_at`` NULL, which the assembly sweep publishes, see
   `node.dicom.assembly`) a queued study with no live attempt whose attempt was just buried, or
   that has shown no sign of progress for `requeue_after`.

Publishing a study that still has a message in the broker makes a duplicate; the task's claim
(`node.store.jobs.claim_inference`) makes duplicates harmless. The node runs this once at start,
periodically, and after it restarts its embedded worker.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from node.config.settings import Settings
from node.store.jobs import Liveness, bury, fail_for_lost_attempts, lost_attempts
from node.store.models import Job, Study
from node.store.redraft import redraft_requested
from node.store.states import JobKind, JobState, StudyState

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReconcilePolicy:
    liveness: Liveness
    requeue_after: timedelta
    max_dead_attempts: int

    @classmethod
    def from_settings(cls, settings: Settings, hard_limit_s: float) -> ReconcilePolicy:
        """The periodic pass's policy: an attempt whose process is gone is buried once it has been
        silent for a third of the heartbeat timeout (two beats), so the broker's own redelivery goes
        first; see `immediate()` for when the node knows the process is gone."""
        heartbeat_timeout = timedelta(seconds=settings.heartbeat_timeout_seconds)
        return cls(
            Liveness(
                heartbeat_timeout=heartbeat_timeout,
                hard_limit=timedelta(seconds=hard_limit_s),
                grace=heartbeat_timeout / 3,
            ),
            requeue_after=timedelta(seconds=settings.requeue_after_seconds),
            max_dead_attempts=settings.max_dead_attempts,
        )

    def immediate(self) -> ReconcilePolicy:
        """No grace: at start-up and after the node restarted its own worker, nothing else will
        take over the dead processes' attempts (their messages died with them)."""
        return replace(self, liveness=replace(self.liveness, grace=timedelta(0)))


@dataclass
class Reconciliation:
    buried: list[int] = field(default_factory=list)  # job ids
    failed: list[int] = field(default_factory=list)  # study ids
    republished: list[int] = field(default_factory=list)  # study ids marked for publishing again

    def __bool__(self) -> bool:
        return bool(self.buried or self.failed or self.republished)


def reconcile(session: Session, now: datetime, policy: ReconcilePolicy) -> Reconciliation:
    """One pass over running attempts and queued studies, in the caller's transaction."""
    result = Reconciliation()
    touched: set[int] = set()
    running = session.scalars(
        select(Job).where(Job.kind == JobKind.INFER, Job.state == JobState.RUNNING).order_by(Job.id)
    )
    for job in running:
        death = policy.liveness.death(job, now)
        if death is None:
            continue
        bury(job, now, death)
        result.buried.append(job.id)
        touched.add(job.study_id)
        log.warning("study %d: inference job %d buried (%s)", job.study_id, job.id, death)
    session.flush()

    queued = list(session.scalars(select(Study).where(Study.state == StudyState.QUEUED).order_by(Study.id)))
    attempts: dict[int, list[Job]] = defaultdict(list)
    if queued:
        for job in session.scalars(
            select(Job).where(Job.kind == JobKind.INFER, Job.study_id.in_([study.id for study in queued]))
        ):
            attempts[job.study_id].append(job)
    for study in queued:
        jobs = attempts[study.id]
        # In a re-draft round (node.store.redraft), succeeded attempts are the earlier round's.
        done = () if redraft_requested(session, study.id) else (JobState.SUCCEEDED,)
        if any(job.state in (JobState.RUNNING, *done) for job in jobs):
            continue  # live (or done: the claim refuses it, republishing would not help)
        if lost_attempts(jobs) >= policy.max_dead_attempts:
            reason = fail_for_lost_attempts(session, study, jobs, now, None)
            result.failed.append(study.id)
            log.error("study %d failed: %s", study.id, reason)
            continue
        if study.enqueued_at is None:
            continue  # waiting to be published already
        if study.id in touched:
            why = "its inference attempt died"
        elif _last_sign(study, jobs) < now - policy.requeue_after:
            why = f"queued for over {policy.requeue_after.total_seconds():g} s with no live attempt"
        else:
            continue
        study.enqueued_at = None
        result.republished.append(study.id)
        log.warning("study %d: %s; publishing it again", study.id, why)
    session.flush()
    return result


def _last_sign(study: Study, jobs: list[Job]) -> datetime:
    """The newest sign of progress: its publishing, or an attempt's start, heartbeat or end."""
    times = [study.enqueued_at] if study.enqueued_at is not None else []
    for job in jobs:
        times.extend(t for t in (job.started_at, job.heartbeat_at, job.ended_at) if t is not None)
    return max(times)
