"""Recovery after a worker process dies mid-inference: the reconciler buries the attempt, the study is
published again and inferred; a study that keeps killing its worker is failed, not redelivered."""

from __future__ import annotations

import socket
import subprocess
import sys
from datetime import timedelta

from sqlalchemy import select

from node.config.settings import Settings
from node.dicom.assembly import StudyAssembler
from node.store.database import Database
from node.store.jobs import WorkerProcess, claim_inference
from node.store.models import Job, Study, utcnow
from node.store.reconcile import ReconcilePolicy, reconcile
from node.store.states import JobState, StudyState
from worker.inference import StudyInference, model_facts, register_model

LIMIT = timedelta(seconds=360)


def killed_worker() -> WorkerProcess:
    """A process on this host that was running a task and got kill -9."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    process.kill()
    process.wait()
    return WorkerProcess(socket.gethostname(), process.pid)


def inference(database: Database, settings: Settings, engine) -> StudyInference:
    return StudyInference(
        database.sessions,
        settings,
        lambda: engine,
        lambda loaded: register_model(database.sessions, model_facts(loaded)),
        stale_after=LIMIT,
    )


def claim_in_dead_process(database: Database, study_id: int, task_id: str) -> None:
    with database.sessions.begin() as session:
        claim = claim_inference(session, study_id, task_id, utcnow(), LIMIT, worker=killed_worker())
    assert claim.job_id is not None


def jobs(database: Database, study_id: int) -> list[tuple[int, JobState]]:
    with database.sessions() as session:
        found = session.scalars(select(Job).where(Job.study_id == study_id).order_by(Job.attempt))
        return [(job.attempt, job.state) for job in found]


def test_a_study_whose_worker_died_is_published_again_and_inferred(
    database: Database, settings: Settings, store_study, images, engine
) -> None:
    study_id = store_study(images.chest())
    claim_in_dead_process(database, study_id, "task-a")  # then kill -9: the message is gone too
    runs = []

    class RunAtOnce:
        """A broker and worker in one: the published task runs at once, with a new task id."""

        def publish_inference(self, published: int) -> None:
            runs.append(inference(database, settings, engine).run(published, f"task-{len(runs) + 2}"))

    policy = ReconcilePolicy.from_settings(settings, LIMIT.total_seconds())
    with database.sessions.begin() as session:  # the periodic pass, two heartbeats after the kill
        result = reconcile(session, utcnow() + policy.liveness.grace, policy)
    assert (result.republished, result.failed) == ([study_id], [])
    assert StudyAssembler(database.sessions, 10.0, RunAtOnce()).publish_pending() == [study_id]

    assert [(run.outcome, run.detail) for run in runs] == [("reported", "report 1")]
    assert jobs(database, study_id) == [(1, JobState.DEAD), (2, JobState.SUCCEEDED)]
    with database.sessions() as session:
        study = session.get_one(Study, study_id)
        assert study.state is StudyState.INFERRED and study.enqueued_at is not None
    assert len(engine.read) == 1


def test_a_study_that_keeps_killing_its_worker_is_failed_without_being_decoded(
    database: Database, node_settings, store_study, images, engine
) -> None:
    settings = node_settings(max_dead_attempts=2)
    study_id = store_study(images.chest())
    claim_in_dead_process(database, study_id, "task-a")
    claim_in_dead_process(database, study_id, "task-a")  # redelivered, died again
    result = inference(database, settings, engine).run(study_id, "task-a")  # and redelivered again
    assert result.outcome == "failed"
    assert result.detail == (
        f"study {study_id} failed: inference was cut off 2 times in a row (its process died: "
        "a crash or out of memory); not tried again"
    )
    assert engine.read == []
    assert jobs(database, study_id) == [(1, JobState.DEAD), (2, JobState.DEAD), (3, JobState.FAILED)]
    with database.sessions() as session:
        assert session.get_one(Study, study_id).state is StudyState.FAILED
