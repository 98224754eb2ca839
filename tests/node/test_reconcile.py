"""The reconciler: attempts of dead processes buried, lost studies published again, poison studies
failed; the database decides, with a clock of the test's own."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from node.dicom.assembly import StudyAssembler
from node.store.database import Database, migrate, open_database
from node.store.jobs import Liveness
from node.store.models import Job, Study, StudyEvent
from node.store.reconcile import ReconcilePolicy, reconcile
from node.store.states import JobKind, JobState, StudyState

NOW = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
HOST = socket.gethostname()
POLICY = ReconcilePolicy(
    Liveness(heartbeat_timeout=timedelta(seconds=60), hard_limit=timedelta(seconds=360)),
    requeue_after=timedelta(seconds=600),
    max_dead_attempts=3,
)


@pytest.fixture
def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    process.kill()
    process.wait()
    return process.pid


@pytest.fixture
def live_pid() -> Iterator[int]:
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield process.pid
    process.kill()
    process.wait()


@pytest.fixture
def study(sqlite_db: Database) -> Callable[..., int]:
    """study(enqueued_at=NOW - 1 s, state=QUEUED): a study row as assembly leaves it; its id."""

    def add(enqueued_at: datetime | None = NOW - timedelta(seconds=1), state=StudyState.QUEUED) -> int:
        with sqlite_db.sessions.begin() as session:
            row = Study(
                study_instance_uid=f"1.2.826.0.1.{id(object())}.{datetime.now(UTC).timestamp()}",
                state=state,
                first_received_at=NOW,
                last_received_at=NOW,
                enqueued_at=enqueued_at,
            )
            session.add(row)
            session.flush()
            return row.id

    return add


def add_job(
    database: Database,
    study_id: int,
    attempt: int,
    state: JobState = JobState.RUNNING,
    *,
    pid: int = 1,
    host: str = HOST,
    started: datetime = NOW,
    heartbeat: datetime | None = None,
    ended: datetime | None = None,
) -> int:
    with database.sessions.begin() as session:
        job = Job(
            study_id=study_id,
            kind=JobKind.INFER,
            attempt=attempt,
            celery_task_id=f"task-{attempt}",
            state=state,
            started_at=started,
            ended_at=ended,
            worker_host=host,
            worker_pid=pid,
            heartbeat_at=heartbeat or started,
        )
        session.add(job)
        session.flush()
        return job.id


def run(database: Database, now: datetime = NOW):
    with database.sessions.begin() as session:
        return reconcile(session, now, POLICY)


def job_rows(database: Database, study_id: int) -> list[tuple[JobState, str | None]]:
    with database.sessions() as session:
        found = session.scalars(select(Job).where(Job.study_id == study_id).order_by(Job.attempt))
        return [(job.state, job.error) for job in found]


def study_row(database: Database, study_id: int) -> Study:
    with database.sessions() as session:
        return session.get_one(Study, study_id)


def test_the_attempt_of_a_dead_process_is_buried_and_its_study_published_again(
    sqlite_db: Database, study, dead_pid: int, live_pid: int
) -> None:
    lost, running = study(), study()
    add_job(sqlite_db, lost, 1, pid=dead_pid)
    add_job(sqlite_db, running, 1, pid=live_pid)
    result = run(sqlite_db, NOW + timedelta(seconds=5))
    assert (result.buried, result.republished, result.failed) == ([1], [lost], [])
    assert job_rows(sqlite_db, lost) == [
        (JobState.DEAD, f"its worker process (pid {dead_pid} on {HOST}) is gone")
    ]
    assert study_row(sqlite_db, lost).enqueued_at is None, "the assembly sweep publishes it again"
    assert job_rows(sqlite_db, running) == [(JobState.RUNNING, None)]
    assert study_row(sqlite_db, running).enqueued_at is not None
    assert not run(sqlite_db, NOW + timedelta(seconds=6)), "nothing left to do"


def test_the_periodic_pass_lets_the_broker_redeliver_first(
    sqlite_db: Database, study, dead_pid: int, make_settings
) -> None:
    """Redis hands a killed pool process's message back at once, with its task id: the periodic
    pass waits two heartbeats before it buries and republishes (a duplicate message otherwise);
    at start-up, or after the node restarted its own worker, nothing else will, so no wait."""
    periodic = ReconcilePolicy.from_settings(make_settings(heartbeat_timeout_seconds=60), 360)
    study_id = study()
    add_job(sqlite_db, study_id, 1, pid=dead_pid, heartbeat=NOW)
    with sqlite_db.sessions.begin() as session:
        assert not reconcile(session, NOW + timedelta(seconds=19), periodic)
    with sqlite_db.sessions.begin() as session:
        assert reconcile(session, NOW + timedelta(seconds=19), periodic.immediate()).buried == [1]
    add_job(sqlite_db, study_id, 2, pid=dead_pid, heartbeat=NOW)
    with sqlite_db.sessions.begin() as session:
        assert reconcile(session, NOW + timedelta(seconds=20), periodic).buried == [2]


def test_an_attempt_on_another_host_is_judged_by_its_heartbeat(sqlite_db: Database, study) -> None:
    study_id = study()
    add_job(sqlite_db, study_id, 1, host="gpu-host-2", pid=4242, heartbeat=NOW)
    assert not run(sqlite_db, NOW + timedelta(seconds=60))
    result = run(sqlite_db, NOW + timedelta(seconds=61))
    assert (result.buried, result.republished) == ([1], [study_id])
    assert job_rows(sqlite_db, study_id) == [(JobState.DEAD, "no heartbeat for 61 s (limit 60 s)")]


def test_an_attempt_past_the_hard_limit_is_buried_even_if_it_beats(sqlite_db: Database, study) -> None:
    study_id = study()
    add_job(sqlite_db, study_id, 1, host="gpu-host-2", heartbeat=NOW + timedelta(seconds=360))
    assert run(sqlite_db, NOW + timedelta(seconds=361)).buried == [1]
    assert job_rows(sqlite_db, study_id) == [(JobState.DEAD, "no result within the hard time limit")]


def test_a_study_the_broker_lost_is_published_again_after_the_limit(sqlite_db: Database, study) -> None:
    """No attempt at all (a Redis restarted without persistence lost the message)."""
    lost = study(enqueued_at=NOW)
    pending = study(enqueued_at=None)  # not yet taken by the broker: assembly publishes it anyway
    assert not run(sqlite_db, NOW + timedelta(seconds=600))
    assert run(sqlite_db, NOW + timedelta(seconds=601)).republished == [lost]
    assert study_row(sqlite_db, lost).enqueued_at is None
    assert study_row(sqlite_db, pending).enqueued_at is None


def test_a_recent_attempt_counts_as_progress(sqlite_db: Database, study) -> None:
    """A failed attempt whose retry is waiting its backoff: the limit runs from the attempt's end."""
    study_id = study(enqueued_at=NOW - timedelta(seconds=3600))
    add_job(sqlite_db, study_id, 1, JobState.FAILED, started=NOW, ended=NOW + timedelta(seconds=10))
    assert not run(sqlite_db, NOW + timedelta(seconds=610))
    assert run(sqlite_db, NOW + timedelta(seconds=611)).republished == [study_id]


def test_a_study_already_inferred_or_no_longer_queued_is_left_alone(sqlite_db: Database, study) -> None:
    done = study(enqueued_at=NOW - timedelta(seconds=3600))
    add_job(sqlite_db, done, 1, JobState.SUCCEEDED, ended=NOW)
    skipped = study(enqueued_at=NOW - timedelta(seconds=3600), state=StudyState.FAILED)
    assert not run(sqlite_db, NOW + timedelta(seconds=3600))
    assert study_row(sqlite_db, done).enqueued_at is not None
    assert study_row(sqlite_db, skipped).state is StudyState.FAILED


def test_a_poison_study_is_failed_after_its_dead_attempts(sqlite_db: Database, study, dead_pid: int) -> None:
    study_id = study()
    add_job(sqlite_db, study_id, 1, JobState.DEAD, ended=NOW)
    add_job(sqlite_db, study_id, 2, JobState.DEAD, ended=NOW)
    add_job(sqlite_db, study_id, 3, pid=dead_pid)  # the third process just died
    result = run(sqlite_db, NOW + timedelta(seconds=5))
    assert (result.buried, result.failed, result.republished) == ([3], [study_id], [])
    reason = (
        "inference was cut off 3 times in a row (its process died: a crash or out of memory); not tried again"
    )
    assert job_rows(sqlite_db, study_id)[-1] == (JobState.FAILED, f"not run: {reason}")
    assert study_row(sqlite_db, study_id).state is StudyState.FAILED
    with sqlite_db.sessions() as session:
        last = session.scalars(select(StudyEvent).where(StudyEvent.study_id == study_id)).one()
    assert (last.from_state, last.to_state, last.reason) == (
        StudyState.QUEUED,
        StudyState.FAILED,
        f"inference: {reason}",
    )


def test_what_the_reconciler_republishes_the_assembly_publishes(
    sqlite_db: Database, study, dead_pid: int, publisher
) -> None:
    study_id = study()
    add_job(sqlite_db, study_id, 1, pid=dead_pid)
    run(sqlite_db, NOW + timedelta(seconds=5))
    later = NOW + timedelta(seconds=6)
    assembler = StudyAssembler(sqlite_db.sessions, 10.0, publisher, lambda: later)
    assert assembler.publish_pending() == [study_id]
    assert publisher.published == [study_id]
    assert study_row(sqlite_db, study_id).enqueued_at == later


def test_the_node_reconciles_at_start(make_settings, start_node, publisher, dead_pid: int, wait_for) -> None:
    """kill -9 of the whole node mid-inference, then a restart: the dead attempt is buried and the
    study published again (it used to wait for ever behind "being inferred by job N")."""
    settings = make_settings()
    database = open_database(settings)
    migrate(database.engine)
    try:
        now = datetime.now(UTC)
        with database.sessions.begin() as session:
            row = Study(
                study_instance_uid="1.2.826.0.1.77",
                state=StudyState.QUEUED,
                first_received_at=now,
                last_received_at=now,
                enqueued_at=now,
            )
            session.add(row)
            session.flush()
            study_id = row.id
        add_job(database, study_id, 1, pid=dead_pid, started=now)
        node = start_node(settings)
        wait_for(lambda: publisher.published == [study_id], 10, "the study to be published again")
        assert node.reconcile().buried == []
        assert job_rows(database, study_id) == [
            (JobState.DEAD, f"its worker process (pid {dead_pid} on {HOST}) is gone")
        ]
    finally:
        database.dispose()
