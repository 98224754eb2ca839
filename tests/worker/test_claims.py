"""Claiming an inference attempt: a duplicate or redelivered message cannot do the work twice, an
attempt whose process died is taken over, and a study whose attempts keep dying is failed."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from node.store.database import Database
from node.store.jobs import REDELIVERED, WorkerProcess, claim_inference, finish_job, pid_alive
from node.store.models import Job, Study, StudyEvent
from node.store.states import JobKind, JobState, StudyState
from node.store.transitions import transition

NOW = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
LIMIT = timedelta(seconds=360)
HEARTBEAT = timedelta(seconds=60)
HOST = socket.gethostname()
ME = WorkerProcess(HOST, os.getpid())


def claim(
    database: Database,
    study_id: int,
    task_id: str,
    now: datetime = NOW,
    worker: WorkerProcess = ME,
    max_dead_attempts: int | None = None,
):
    with database.sessions.begin() as session:
        return claim_inference(
            session,
            study_id,
            task_id,
            now,
            LIMIT,
            worker=worker,
            heartbeat_timeout=HEARTBEAT,
            max_dead_attempts=max_dead_attempts,
        )


def dead_pid() -> int:
    """The id of a process that existed on this host and is gone (killed and reaped)."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    process.kill()
    process.wait()
    return process.pid


@pytest.fixture
def gone() -> WorkerProcess:
    """A worker process on this host that was killed (kill -9) mid-task."""
    return WorkerProcess(HOST, dead_pid())


@pytest.fixture
def alive() -> WorkerProcess:
    """Another live worker process on this host."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield WorkerProcess(HOST, process.pid)
    process.kill()
    process.wait()


def jobs(database: Database, study_id: int) -> list[tuple[int, str | None, JobState, str | None]]:
    with database.sessions() as session:
        rows = session.scalars(select(Job).where(Job.study_id == study_id).order_by(Job.attempt))
        return [(job.attempt, job.celery_task_id, job.state, job.error) for job in rows]


def finish(database: Database, job_id: int | None, state: JobState = JobState.SUCCEEDED) -> None:
    assert job_id is not None
    with database.sessions.begin() as session:
        finish_job(session, job_id, state, NOW, None if state is JobState.SUCCEEDED else "boom")


def test_the_first_message_claims_attempt_one(database: Database, add_study) -> None:
    study_id = add_study()
    first = claim(database, study_id, "task-a")
    assert first.job_id is not None and first.reason == "attempt 1"
    finish(database, first.job_id)
    assert jobs(database, study_id) == [(1, "task-a", JobState.SUCCEEDED, None)]


def test_a_duplicate_after_success_does_nothing(database: Database, add_study) -> None:
    study_id = add_study()
    finish(database, claim(database, study_id, "task-a").job_id)
    again = claim(database, study_id, "task-b")
    assert again.job_id is None
    assert again.reason.startswith(f"study {study_id} was already inferred")
    assert len(jobs(database, study_id)) == 1


def test_a_duplicate_while_another_worker_runs_it_does_nothing(database: Database, add_study) -> None:
    study_id = add_study()
    claim(database, study_id, "task-a")
    duplicate = claim(database, study_id, "task-b", NOW + timedelta(seconds=5))
    assert duplicate.job_id is None and "is being inferred by job" in duplicate.reason


def test_a_redelivered_message_takes_over_from_its_lost_worker(
    database: Database, add_study, gone: WorkerProcess
) -> None:
    study_id = add_study()
    claim(database, study_id, "task-a", worker=gone)
    redelivered = claim(database, study_id, "task-a", NOW + timedelta(seconds=5))
    assert redelivered.reason == "attempt 2"
    assert jobs(database, study_id) == [
        (1, "task-a", JobState.DEAD, REDELIVERED),
        (2, "task-a", JobState.RUNNING, None),
    ]


def test_a_claim_records_the_process_and_its_first_heartbeat(database: Database, add_study) -> None:
    study_id = add_study()
    claim(database, study_id, "task-a")
    with database.sessions() as session:
        job = session.scalars(select(Job).where(Job.study_id == study_id)).one()
        assert (job.worker_host, job.worker_pid, job.heartbeat_at) == (HOST, os.getpid(), NOW)


def test_a_republished_message_buries_the_attempt_of_a_dead_process(
    database: Database, add_study, gone: WorkerProcess
) -> None:
    """kill -9 mid-inference, then the node publishes the study again (a new task id): the dead
    process's attempt must not block the study for ever ("being inferred by job N")."""
    study_id = add_study()
    claim(database, study_id, "task-a", worker=gone)
    again = claim(database, study_id, "task-b", NOW + timedelta(seconds=5))
    assert again.reason == "attempt 2"
    assert jobs(database, study_id) == [
        (1, "task-a", JobState.DEAD, f"its worker process (pid {gone.pid} on {HOST}) is gone"),
        (2, "task-b", JobState.RUNNING, None),
    ]


def test_the_same_message_redelivered_while_its_process_still_runs_is_refused(
    database: Database, add_study, alive: WorkerProcess
) -> None:
    """A Redis visibility timeout can hand a message to a second worker while the first runs it."""
    study_id = add_study()
    claim(database, study_id, "task-a", worker=alive)
    twice = claim(database, study_id, "task-a", NOW + timedelta(seconds=5))
    assert twice.job_id is None and "is being inferred by job" in twice.reason
    assert [state for _, _, state, _ in jobs(database, study_id)] == [JobState.RUNNING]


def test_an_attempt_on_another_host_lives_while_its_heartbeat_does(database: Database, add_study) -> None:
    study_id = add_study()
    elsewhere = WorkerProcess("gpu-host-2", 4242)
    claim(database, study_id, "task-a", worker=elsewhere)
    fresh = claim(database, study_id, "task-b", NOW + HEARTBEAT - timedelta(seconds=1))
    assert fresh.job_id is None and "is being inferred by job" in fresh.reason
    stale = claim(database, study_id, "task-b", NOW + HEARTBEAT + timedelta(seconds=1))
    assert stale.reason == "attempt 2"
    assert jobs(database, study_id)[0][2:] == (JobState.DEAD, "no heartbeat for 61 s (limit 60 s)")


def test_a_zombie_process_counts_as_dead() -> None:
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert pid_alive(process.pid)
        os.kill(process.pid, signal.SIGKILL)
        deadline = datetime.now(UTC) + timedelta(seconds=10)
        while pid_alive(process.pid) and datetime.now(UTC) < deadline:  # exited, not yet reaped
            threading.Event().wait(0.01)
        assert not pid_alive(process.pid)
    finally:
        process.wait()
    assert not pid_alive(process.pid) and not pid_alive(0)


def test_a_study_whose_attempts_keep_dying_is_failed(
    database: Database, add_study, gone: WorkerProcess
) -> None:
    """A poison study (its decoding kills the process) is tried max_dead_attempts times, then failed,
    and no longer redelivered; an operator's re-queue gives it the full number of tries again."""
    study_id = add_study()
    for n in range(3):
        made = claim(database, study_id, "task-a", NOW + timedelta(seconds=n), gone, max_dead_attempts=3)
        assert made.reason == f"attempt {n + 1}"
    refused = claim(database, study_id, "task-a", NOW + timedelta(seconds=3), max_dead_attempts=3)
    reason = (
        "inference was cut off 3 times in a row (its process died: a crash or out of memory); not tried again"
    )
    assert (refused.job_id, refused.study_failed, refused.reason) == (
        None,
        True,
        f"study {study_id} failed: {reason}",
    )
    assert [state for _, _, state, _ in jobs(database, study_id)] == [
        JobState.DEAD,
        JobState.DEAD,
        JobState.DEAD,
        JobState.FAILED,
    ]
    assert jobs(database, study_id)[-1][3] == f"not run: {reason}"
    with database.sessions.begin() as session:
        study = session.get_one(Study, study_id)
        assert study.state is StudyState.FAILED
        event = session.scalars(select(StudyEvent).where(StudyEvent.study_id == study_id)).one()
        assert event.reason == f"inference: {reason}"
        transition(session, study, StudyState.QUEUED, "operator re-queue")
    assert claim(database, study_id, "task-c", NOW + timedelta(seconds=4), max_dead_attempts=3).reason == (
        "attempt 5"
    )


def test_a_failed_attempt_between_lost_ones_restarts_the_count(
    database: Database, add_study, gone: WorkerProcess
) -> None:
    study_id = add_study()
    claim(database, study_id, "task-a", worker=gone)
    claim(database, study_id, "task-b", worker=gone)  # buries attempt 1
    with database.sessions.begin() as session:
        job = session.scalars(select(Job).where(Job.study_id == study_id, Job.attempt == 2)).one()
        finish_job(session, job.id, JobState.FAILED, NOW, "will retry: the GPU was busy")
    claim(database, study_id, "task-c", worker=gone)
    assert claim(database, study_id, "task-d", max_dead_attempts=2).reason == "attempt 4"


def test_an_attempt_past_the_hard_time_limit_is_dead(database: Database, add_study) -> None:
    study_id = add_study()
    claim(database, study_id, "task-a")
    later = claim(database, study_id, "task-b", NOW + LIMIT + timedelta(seconds=1))
    assert later.reason == "attempt 2"
    assert jobs(database, study_id)[0][2:] == (JobState.DEAD, "no result within the hard time limit")


def test_a_failed_attempt_may_be_retried(database: Database, add_study) -> None:
    study_id = add_study()
    finish(database, claim(database, study_id, "task-a").job_id, JobState.FAILED)
    assert claim(database, study_id, "task-b").reason == "attempt 2"


@pytest.mark.parametrize("state", [StudyState.RECEIVED, StudyState.SKIPPED, StudyState.FAILED])
def test_only_queued_studies_are_inferred(database: Database, add_study, state: StudyState) -> None:
    study_id = add_study(state)
    refused = claim(database, study_id, "task-a")
    assert (refused.job_id, refused.reason) == (None, f"study {study_id} is {state}, not queued")
    assert jobs(database, study_id) == []


def test_a_study_that_does_not_exist(database: Database) -> None:
    assert claim(database, 404, "task-a").reason == "study 404 does not exist"


@pytest.mark.integration
def test_two_duplicates_racing_on_postgresql_make_one_attempt(postgres_database: Database) -> None:
    """Both read "no attempt yet"; the unique index lets one insert win and the other back off."""
    sessions = postgres_database.sessions
    with sessions.begin() as session:
        study = Study(
            study_instance_uid="1.2.3.99",
            state=StudyState.QUEUED,
            first_received_at=NOW,
            last_received_at=NOW,
        )
        session.add(study)
        session.flush()
        study_id = study.id
    first = sessions()
    first.begin()
    won = claim_inference(first, study_id, "task-a", NOW, LIMIT)  # not committed yet
    outcome = {}

    def second() -> None:
        with sessions.begin() as session:
            outcome["claim"] = claim_inference(session, study_id, "task-b", NOW, LIMIT)

    racer = threading.Thread(target=second)
    racer.start()
    racer.join(0.5)
    assert racer.is_alive(), "the second insert should wait on the first transaction's index entry"
    first.commit()
    first.close()
    racer.join(10)
    assert won.job_id is not None
    assert outcome["claim"].job_id is None
    assert "a concurrent duplicate claimed this attempt first" in outcome["claim"].reason
    with sessions() as session:
        assert session.scalars(select(Job.kind).where(Job.study_id == study_id)).all() == [JobKind.INFER]
