"""Job rows: how a task claims its work so that a duplicate message cannot do it twice, and how
an attempt whose process died is told apart from one that is still running.

A message can arrive twice: the node publishes again after a crash between publish and
bookkeeping (`node.dicom.assembly`) or when it finds a study with no live attempt
(`node.store.reconcile`), and the broker redelivers when a worker dies mid-task (acks_late).
The task therefore claims an attempt first; the claim is refused when the work is done or
another live worker holds it, and the partial unique index on (study, attempt) settles two
claims racing each other.

An attempt records the process running it (host name and pid) and a heartbeat that process
refreshes while it works. A running attempt is dead when its process is provably gone (same
host, pid not alive), when its heartbeat is older than the heartbeat timeout, or when it has run
past the hard time limit; a dead attempt is buried (state "dead") and the study may be claimed
again. A study whose last `max_dead_attempts` attempts all died with their process (a crash in
a native decoder, the OOM killer) is failed instead of being tried again: one poison study must
not take the workers down for ever.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from node.store.models import Job, Study
from node.store.redraft import redraft_requested
from node.store.states import JobKind, JobState, StudyState
from node.store.transitions import transition

REDELIVERED = "its worker was lost; the message was redelivered"
PAST_HARD_LIMIT = "no result within the hard time limit"


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists on this host and is not a zombie."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:  # no /proc (not Linux): the signal said it exists
        return True
    fields = stat.rpartition(")")[2].split()  # the command name, in parentheses, may hold spaces
    return not fields or fields[0] not in {"Z", "X", "x"}  # a zombie has exited, only unreaped


@dataclass(frozen=True)
class WorkerProcess:
    """The process that runs an attempt, as the jobs table records it."""

    host: str
    pid: int

    @classmethod
    def current(cls) -> WorkerProcess:
        return cls(socket.gethostname(), os.getpid())


@dataclass(frozen=True)
class Liveness:
    """How an observer on `host` decides that a running attempt's process is gone."""

    heartbeat_timeout: timedelta
    hard_limit: timedelta
    host: str = field(default_factory=socket.gethostname)
    pid_alive: Callable[[int], bool] = pid_alive
    # A gone process's attempt is judged dead only once its last sign of life is this old: room for
    # the broker's own redelivery (immediate on Redis) to take it over first, without a duplicate.
    grace: timedelta = timedelta(0)

    def process_gone(self, job: Job) -> bool:
        """True only when the attempt ran on this host and its process no longer exists."""
        return (
            job.worker_host == self.host and job.worker_pid is not None and not self.pid_alive(job.worker_pid)
        )

    def death(self, job: Job, now: datetime) -> str | None:
        """Why the running attempt `job` is certainly dead; None while it may be alive."""
        last_sign = job.heartbeat_at or job.started_at
        if last_sign <= now - self.grace and self.process_gone(job):
            return f"its worker process (pid {job.worker_pid} on {job.worker_host}) is gone"
        if job.started_at < now - self.hard_limit:
            return PAST_HARD_LIMIT
        if last_sign < now - self.heartbeat_timeout:
            silent = (now - last_sign).total_seconds()
            return f"no heartbeat for {silent:.0f} s (limit {self.heartbeat_timeout.total_seconds():g} s)"
        return None


@dataclass(frozen=True)
class Claim:
    job_id: int | None  # None: do nothing, `reason` says why
    reason: str
    study_failed: bool = False  # the claim failed the study (too many attempts lost)


def lost_attempts(attempts: Sequence[Job]) -> int:
    """How many of the newest attempts, in a row, died with their process (state "dead").

    Any other outcome ends the run: a failed attempt (a transient error, or the row written when
    a study was failed for its lost attempts) means the next ones count afresh, so an operator who
    re-queues a failed study gets the full number of attempts again.
    """
    count = 0
    for job in sorted(attempts, key=lambda row: row.attempt, reverse=True):
        if job.state is not JobState.DEAD:
            break
        count += 1
    return count


def too_many_lost(lost: int) -> str:
    return (
        f"inference was cut off {lost} times in a row (its process died: a crash or out of memory); "
        "not tried again"
    )


def fail_for_lost_attempts(
    session: Session, study: Study, attempts: Sequence[Job], now: datetime, task_id: str | None
) -> str:
    """Fail `study` (queued) after too many lost attempts, in the caller's transaction; the reason.

    A failed job row records the attempt that was not made, so the count starts again if an
    operator re-queues the study.
    """
    reason = too_many_lost(lost_attempts(attempts))
    session.add(
        Job(
            study_id=study.id,
            kind=JobKind.INFER,
            attempt=_next_attempt(attempts),
            celery_task_id=task_id,
            state=JobState.FAILED,
            error=f"not run: {reason}",
            started_at=now,
            ended_at=now,
        )
    )
    transition(session, study, StudyState.FAILED, f"inference: {reason}")
    return reason


def claim_inference(
    session: Session,
    study_id: int,
    task_id: str | None,
    now: datetime,
    stale_after: timedelta,
    *,
    worker: WorkerProcess | None = None,
    heartbeat_timeout: timedelta | None = None,
    max_dead_attempts: int | None = None,
    is_alive: Callable[[int], bool] = pid_alive,
) -> Claim:
    """Claim the next inference attempt for `study_id` in the caller's transaction.

    A running attempt is taken over (buried) when its process is gone (same host, pid not alive),
    its heartbeat is older than `heartbeat_timeout`, or it has run past `stale_after` (the hard
    time limit). The same message redelivered while its first delivery still runs (a Redis
    visibility timeout, a retry held past it) is refused like any duplicate, unless the running row
    is this very process's (its earlier try is over) or recorded no process (an older row).
    With `max_dead_attempts`, a study whose last attempts all died with their process is failed.
    """
    worker = worker or WorkerProcess.current()
    liveness = Liveness(heartbeat_timeout or stale_after, stale_after, worker.host, is_alive)
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
    earlier_round = redraft_requested(session, study_id)  # its succeeded attempts drafted the old report
    for job in attempts:
        if job.state is JobState.SUCCEEDED and not earlier_round:
            return Claim(None, f"study {study_id} was already inferred (job {job.id})")
        if job.state is not JobState.RUNNING:
            continue
        death = liveness.death(job, now)
        if death is None and job.celery_task_id == task_id and _own_or_unknown(job, worker):
            death = REDELIVERED
        if death is None:
            return Claim(None, f"study {study_id} is being inferred by job {job.id}")
        if job.celery_task_id == task_id and liveness.process_gone(job):
            death = REDELIVERED
        bury(job, now, death)
    if max_dead_attempts is not None and lost_attempts(attempts) >= max_dead_attempts:
        session.flush()
        reason = fail_for_lost_attempts(session, study, attempts, now, task_id)
        return Claim(None, f"study {study_id} failed: {reason}", study_failed=True)
    job = Job(
        study_id=study_id,
        kind=JobKind.INFER,
        attempt=_next_attempt(attempts),
        celery_task_id=task_id,
        state=JobState.RUNNING,
        started_at=now,
        worker_host=worker.host,
        worker_pid=worker.pid,
        heartbeat_at=now,
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


def bury(job: Job, now: datetime, reason: str) -> None:
    """Mark a running attempt dead: its process is gone and will never finish it."""
    job.state = JobState.DEAD
    job.error = reason
    job.ended_at = now


def _own_or_unknown(job: Job, worker: WorkerProcess) -> bool:
    """The attempt recorded no process (an older row), or this very process made it: a process
    runs one task at a time, so its own earlier try of this message is over."""
    return job.worker_pid is None or (job.worker_host, job.worker_pid) == (worker.host, worker.pid)


def _next_attempt(attempts: Sequence[Job]) -> int:
    return max((job.attempt for job in attempts), default=0) + 1
