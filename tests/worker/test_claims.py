"""Claiming an inference attempt: a duplicate or redelivered message cannot do the work twice."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from node.store.database import Database
from node.store.jobs import claim_inference, finish_job
from node.store.models import Job, Study
from node.store.states import JobKind, JobState, StudyState

NOW = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
LIMIT = timedelta(seconds=360)


def claim(database: Database, study_id: int, task_id: str, now: datetime = NOW):
    with database.sessions.begin() as session:
        return claim_inference(session, study_id, task_id, now, LIMIT)


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


def test_a_redelivered_message_takes_over_from_its_lost_worker(database: Database, add_study) -> None:
    study_id = add_study()
    claim(database, study_id, "task-a")
    redelivered = claim(database, study_id, "task-a", NOW + timedelta(seconds=5))
    assert redelivered.reason == "attempt 2"
    assert jobs(database, study_id) == [
        (1, "task-a", JobState.DEAD, "its worker was lost; the message was redelivered"),
        (2, "task-a", JobState.RUNNING, None),
    ]


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
