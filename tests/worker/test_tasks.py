"""The Celery tasks run eagerly (apply): retries with backoff, the dead letter, the engine loaded once."""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta

import pytest
from celery.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded
from celery.signals import task_failure
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from node.broker.app import DELIVER_REPORT, INFER_STUDY, EchoCelery
from node.config.settings import Settings
from node.store.database import Database
from node.store.jobs import WorkerProcess, claim_inference
from node.store.models import Job, Study, StudyEvent, utcnow
from node.store.states import JobState, StudyState
from worker.app import create_worker_app
from worker.failures import TransientInferenceError


@pytest.fixture
def app(settings: Settings, database: Database) -> Iterator[EchoCelery]:
    app = create_worker_app(settings)
    app.loader.import_default_modules()
    yield app
    for name in (INFER_STUDY, DELIVER_REPORT):
        if "database" in vars(app.tasks[name]):
            app.tasks[name].database.dispose()


def jobs(database: Database, study_id: int) -> list[tuple[int, JobState, str | None]]:
    with database.sessions() as session:
        found = session.scalars(select(Job).where(Job.study_id == study_id).order_by(Job.attempt))
        return [(job.attempt, job.state, job.error) for job in found]


def study(database: Database, study_id: int) -> tuple[StudyState, str | None]:
    with database.sessions() as session:
        reason = session.scalars(
            select(StudyEvent.reason).where(StudyEvent.study_id == study_id).order_by(StudyEvent.id.desc())
        ).first()
        return session.get_one(Study, study_id).state, reason


def test_inference_options_on_the_decorator(app: EchoCelery) -> None:
    task = app.tasks[INFER_STUDY]
    assert (task.acks_late, task.reject_on_worker_lost, task.ignore_result) == (True, True, True)
    assert (task.soft_time_limit, task.time_limit) == (300, 360)
    assert (task.max_retries, task.retry_backoff, task.retry_backoff_max, task.retry_jitter) == (
        5,
        5,
        300,
        True,
    )
    assert set(task.autoretry_for) == {TransientInferenceError, OperationalError, SoftTimeLimitExceeded}
    assert app.amqp.router.route({}, DELIVER_REPORT)["queue"].name == "io"


def test_the_engine_is_loaded_once_per_process_on_first_use(
    app: EchoCelery, database: Database, store_study, images, engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    loads = []

    def load(model_dir, *args, **kwargs):
        loads.append(model_dir)
        engine.providers, engine.start_seconds = ["CPUExecutionProvider"], 0.0
        return engine

    monkeypatch.setattr("echo.runtime.Engine.load", load)
    task = app.tasks[INFER_STUDY]
    assert "engine" not in vars(task), "nothing loaded at import or registration"
    first, second = store_study(images.chest()), store_study(images.chest())
    assert task.apply(args=[first]).get() == "reported: report 1"
    assert task.apply(args=[second]).get() == "reported: report 2"
    assert loads == [app.echo_settings.effective_model_dir]


def test_a_model_that_never_loads_is_retried_then_dead_lettered(
    app: EchoCelery, database: Database, store_study, images, tmp_path
) -> None:
    """Eager retries run at once (no countdown); a worker waits 5 s, 10 s, ... with jitter."""
    app.echo_settings = app.echo_settings.model_copy(update={"model_dir": tmp_path / "no-model"})
    study_id = store_study(images.chest())
    result = app.tasks[INFER_STUDY].apply(args=[study_id])
    assert result.failed()
    attempts = jobs(database, study_id)
    assert [attempt for attempt, _, _ in attempts] == [1, 2, 3, 4, 5, 6]
    assert {state for _, state, _ in attempts[:-1]} == {JobState.FAILED}
    expected = f"EngineUnavailable: cannot load the model at {tmp_path / 'no-model'}: model directory"
    assert attempts[-1][1] is JobState.DEAD
    assert attempts[-1][2].startswith(expected) and attempts[-1][2].endswith("(after 6 tries)")
    state, reason = study(database, study_id)
    assert state is StudyState.FAILED
    assert reason == f"inference gave up: {attempts[-1][2]}"


def test_an_unexpected_error_is_not_retried_and_is_dead_lettered(
    app: EchoCelery, database: Database, store_study, images, engine
) -> None:
    engine.error = RuntimeError("kernel exploded")
    vars(app.tasks[INFER_STUDY])["engine"] = engine
    study_id = store_study(images.chest())
    assert app.tasks[INFER_STUDY].apply(args=[study_id]).failed()
    assert jobs(database, study_id) == [(1, JobState.DEAD, "RuntimeError: kernel exploded (after 1 try)")]
    assert study(database, study_id) == (
        StudyState.FAILED,
        "inference gave up: RuntimeError: kernel exploded (after 1 try)",
    )


def test_a_retry_that_succeeds_leaves_one_report(
    app: EchoCelery, database: Database, store_study, images, engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []

    def flaky(model_dir, *args, **kwargs):
        calls.append(model_dir)
        if len(calls) < 3:
            raise OSError("GPU not ready")
        engine.providers, engine.start_seconds = ["CPUExecutionProvider"], 0.0
        return engine

    monkeypatch.setattr("echo.runtime.Engine.load", flaky)
    study_id = store_study(images.chest())
    assert app.tasks[INFER_STUDY].apply(args=[study_id]).get() == "reported: report 1"
    assert [state for _, state, _ in jobs(database, study_id)] == [
        JobState.FAILED,
        JobState.FAILED,
        JobState.SUCCEEDED,
    ]
    assert jobs(database, study_id)[0][2] == (
        f"will retry: EngineUnavailable: cannot load the model at {app.echo_settings.effective_model_dir}: "
        "OSError: GPU not ready"
    )
    assert study(database, study_id)[0] is StudyState.INFERRED


def test_a_process_killed_at_the_hard_limit_is_dead_lettered_by_the_main_process(
    app: EchoCelery, database: Database, store_study, images
) -> None:
    """Celery sends task_failure from the worker's main process when the pool kills a child at the
    hard time limit; the claim the child left running becomes the dead letter."""
    study_id = store_study(images.chest())
    with database.sessions.begin() as session:
        claim_inference(session, study_id, "task-hung", utcnow(), timedelta(seconds=360))
    task = app.tasks[INFER_STUDY]
    task_failure.send(
        sender=task, task_id="task-hung", exception=TimeLimitExceeded(360), args=[study_id], kwargs={}
    )
    reason = "killed at the hard time limit of 360 s"
    assert jobs(database, study_id) == [(1, JobState.DEAD, reason)]
    assert study(database, study_id) == (StudyState.FAILED, f"inference gave up: {reason}")


def test_a_redelivered_poison_study_is_failed_not_run_again(
    app: EchoCelery, database: Database, store_study, images, engine
) -> None:
    """A study whose inference killed the pool process three times (a crash in a native decoder, the
    OOM killer) used to be redelivered without end; the fourth delivery fails it instead."""
    vars(app.tasks[INFER_STUDY])["engine"] = engine
    study_id = store_study(images.chest())
    for _ in range(3):
        killed = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        with database.sessions.begin() as session:
            claim_inference(
                session,
                study_id,
                "task-poison",
                utcnow(),
                timedelta(seconds=360),
                worker=WorkerProcess(socket.gethostname(), killed.pid),
            )
        killed.kill()
        killed.wait()
    result = app.tasks[INFER_STUDY].apply(args=[study_id], task_id="task-poison")
    assert result.get() == (
        f"failed: study {study_id} failed: inference was cut off 3 times in a row (its process died: "
        "a crash or out of memory); not tried again"
    )
    assert [state for _, state, _ in jobs(database, study_id)] == [JobState.DEAD] * 3 + [JobState.FAILED]
    assert study(database, study_id)[0] is StudyState.FAILED
    assert engine.read == []


def test_a_gpu_provider_this_onnxruntime_lacks_falls_back_to_the_cpu_with_a_warning(caplog) -> None:
    from node.config.settings import bundled_model_dir
    from worker.tasks import load_engine

    with caplog.at_level(logging.INFO, logger="worker.tasks"):
        engine = load_engine(bundled_model_dir(), "cuda")

    assert engine.providers[0] == "CPUExecutionProvider"
    [warning] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert (
        warning.startswith("ECHO_ORT_PROVIDER=cuda: this onnxruntime has no CUDA")
        and "running on CPU" in warning
    )
    assert any("running on CPU (ECHO_ORT_PROVIDER=cuda)" in r.getMessage() for r in caplog.records)
