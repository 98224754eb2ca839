"""The Celery tasks run eagerly (apply): retries with backoff, the dead letter, the engine loaded once."""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from types import SimpleNamespace

import pytest
from celery.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded
from celery.signals import task_failure
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from node.broker.app import DELIVER_REPORT, INFER_STUDY, EchoCelery
from node.broker.publish import CeleryPublisher
from node.config.settings import Settings
from node.serve.deliveries import FRESH_GRACE_S, DeliveryLoop, left_to_the_loop
from node.store.database import Database
from node.store.jobs import WorkerProcess, claim_inference
from node.store.models import Delivery, Job, Report, Study, StudyEvent, utcnow
from node.store.states import DeliveryKind, DeliveryStatus, JobState, StudyState
from worker.app import create_worker_app
from worker.failures import TransientInferenceError
from worker.solo_limits import EXIT_HARD_LIMIT, SoloTimeLimits


def worker_app(settings: Settings) -> Iterator[EchoCelery]:
    """A worker's app with its tasks registered; their database engines closed afterwards."""
    app = create_worker_app(settings)
    app.loader.import_default_modules()
    yield app
    for name in (INFER_STUDY, DELIVER_REPORT):
        if "database" in vars(app.tasks[name]):
            app.tasks[name].database.dispose()


@pytest.fixture
def app(settings: Settings, database: Database) -> Iterator[EchoCelery]:
    yield from worker_app(settings)


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


# --- the report handed to the outbox -------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _deliveries(database: Database, study_id: int) -> list[tuple[DeliveryKind, DeliveryStatus, int]]:
    with database.sessions() as session:
        rows = session.scalars(
            select(Delivery).join(Report).where(Report.study_id == study_id).order_by(Delivery.id)
        )
        return [(row.kind, row.status, row.attempts) for row in rows]


@pytest.fixture
def peers_app(node_settings, database: Database) -> Iterator[EchoCelery]:
    """The embedded worker's app with a PACS and a RIS configured on ports nobody listens on."""
    yield from worker_app(
        node_settings(pacs=f"PACS@127.0.0.1:{_free_port()}", ris=f"127.0.0.1:{_free_port()}")
    )


def test_on_the_embedded_node_the_task_sends_its_report_right_after_the_commit(
    peers_app: EchoCelery, database: Database, store_study, images, engine
) -> None:
    """No delivery loop runs here: the first attempt of each row is the task's own (refused: retrying)."""
    vars(peers_app.tasks[INFER_STUDY])["engine"] = engine
    study_id = store_study(images.chest())
    assert peers_app.tasks[INFER_STUDY].apply(args=[study_id]).get() == "reported: report 1"
    assert _deliveries(database, study_id) == [
        (DeliveryKind.SR, DeliveryStatus.RETRYING, 1),
        (DeliveryKind.ORU, DeliveryStatus.RETRYING, 1),
    ]


def test_while_a_destination_fails_the_task_leaves_the_sending_to_the_node_s_loop(
    peers_app: EchoCelery, database: Database, store_study, images, engine
) -> None:
    """A PACS that is down would cost each study a connection timeout in the worker; the node's loop
    retries at its own pace instead."""
    vars(peers_app.tasks[INFER_STUDY])["engine"] = engine
    first, second = store_study(images.chest()), store_study(images.chest())
    peers_app.tasks[INFER_STUDY].apply(args=[first]).get()  # its rows now wait to be retried
    assert peers_app.tasks[INFER_STUDY].apply(args=[second]).get() == "reported: report 2"
    assert _deliveries(database, second) == [
        (DeliveryKind.SR, DeliveryStatus.PENDING, 0),
        (DeliveryKind.ORU, DeliveryStatus.PENDING, 0),
    ]


def test_with_redis_the_report_is_published_to_an_io_worker(
    node_settings, database: Database, store_study, images, engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = node_settings(ris="127.0.0.1:2575", broker_url="redis://127.0.0.1:6379/15")
    app = create_worker_app(settings)
    app.loader.import_default_modules()
    vars(app.tasks[INFER_STUDY])["engine"] = engine
    published: list[int] = []
    monkeypatch.setattr(
        CeleryPublisher, "publish_delivery", lambda _self, report_id: published.append(report_id)
    )
    try:
        study_id = store_study(images.chest())
        assert app.tasks[INFER_STUDY].apply(args=[study_id]).get() == "reported: report 1"
    finally:
        app.tasks[INFER_STUDY].database.dispose()
    assert published == [1]
    assert _deliveries(database, study_id) == [(DeliveryKind.ORU, DeliveryStatus.PENDING, 0)]


# --- the node's delivery loop: what no worker sent -------------------------------------------------


@pytest.mark.parametrize(
    ("status", "created_s_ago", "due_in_s", "left"),
    [
        (DeliveryStatus.PENDING, 1, 0, False),  # fresh: its worker sends it now
        (DeliveryStatus.PENDING, 1, 300, False),  # claimed, being sent
        (DeliveryStatus.PENDING, FRESH_GRACE_S + 1, 0, True),  # no worker took it
        (DeliveryStatus.RETRYING, 60, 0, True),  # its peer failed: due again
        (DeliveryStatus.RETRYING, 60, 30, False),  # backing off
        (DeliveryStatus.DELIVERED, 60, 0, False),
    ],
)
def test_the_node_s_loop_takes_only_what_no_worker_will_send(
    database: Database, node_settings, store_study, images, report_for, status, created_s_ago, due_in_s, left
) -> None:
    report_for(store_study(images.chest()), node_settings(ris=f"127.0.0.1:{_free_port()}"))
    now = utcnow()
    with database.sessions.begin() as session:
        row = session.scalars(select(Delivery)).one()
        row.status = status
        row.created_at = now - timedelta(seconds=created_s_ago)
        row.next_attempt_at = now + timedelta(seconds=due_in_s)
    with database.sessions() as session:
        assert left_to_the_loop(session, now, timedelta(seconds=FRESH_GRACE_S)) is left


def test_the_node_s_loop_loads_the_outbox_only_for_a_row_no_worker_sent(
    database: Database, node_settings, store_study, images, report_for
) -> None:
    """The message builders and what they load (~100 MB) stay out of the node's process while the
    worker sends."""
    settings = node_settings(ris=f"127.0.0.1:{_free_port()}")
    loop = DeliveryLoop(database.sessions, settings)
    study_id = store_study(images.chest())
    report_for(study_id, settings)
    loop.tick()
    assert loop._outbox is None
    assert _deliveries(database, study_id) == [(DeliveryKind.ORU, DeliveryStatus.PENDING, 0)]
    with database.sessions.begin() as session:
        session.scalars(select(Delivery)).one().created_at = utcnow() - timedelta(seconds=FRESH_GRACE_S + 1)
    loop.tick()
    assert _deliveries(database, study_id) == [(DeliveryKind.ORU, DeliveryStatus.RETRYING, 1)]


def test_with_redis_the_node_s_loop_sends_beside_the_io_workers_at_once(
    database: Database, node_settings, store_study, images, report_for
) -> None:
    settings = node_settings(ris=f"127.0.0.1:{_free_port()}", broker_url="redis://127.0.0.1:6379/15")
    study_id = store_study(images.chest())
    report_for(study_id, settings)
    DeliveryLoop(database.sessions, settings).tick()
    assert _deliveries(database, study_id) == [(DeliveryKind.ORU, DeliveryStatus.RETRYING, 1)]


# --- time limits in a worker without a pool process (`--pool solo`) -------------------------------


@pytest.fixture
def solo_limits() -> Iterator[tuple[SoloTimeLimits, list[int]]]:
    exits: list[int] = []
    limits = SoloTimeLimits(exit_process=exits.append)
    limits.install()
    yield limits, exits
    limits.uninstall()


def test_the_soft_limit_raises_inside_the_running_task(solo_limits) -> None:
    limits, exits = solo_limits
    limits.started(sender=SimpleNamespace(name="t", soft_time_limit=0.2, time_limit=None))
    started = time.monotonic()
    with pytest.raises(SoftTimeLimitExceeded):
        time.sleep(10)
    assert time.monotonic() - started < 5 and exits == []


def test_a_task_that_ends_in_time_is_not_interrupted(solo_limits) -> None:
    limits, exits = solo_limits
    limits.started(sender=SimpleNamespace(name="t", soft_time_limit=0.2, time_limit=0.3))
    limits.ended()
    time.sleep(0.5)
    assert exits == []


def test_the_hard_limit_dead_letters_the_attempt_and_ends_the_process(
    app: EchoCelery, database: Database, store_study, images, solo_limits, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the prefork parent does when it kills a pool process: the dead letter, then the exit
    (the node restarts its worker)."""
    limits, exits = solo_limits
    study_id = store_study(images.chest())
    with database.sessions.begin() as session:
        claim_inference(session, study_id, "task-hung", utcnow(), timedelta(seconds=360))
    task = app.tasks[INFER_STUDY]
    monkeypatch.setattr(task, "soft_time_limit", None)
    monkeypatch.setattr(task, "time_limit", 0.2)
    limits.started(sender=task, task_id="task-hung", args=(study_id,), kwargs={})
    deadline = time.monotonic() + 10
    while not exits and time.monotonic() < deadline:
        time.sleep(0.05)
    assert exits == [EXIT_HARD_LIMIT]
    reason = "killed at the hard time limit of 0.2 s"
    assert jobs(database, study_id) == [(1, JobState.DEAD, reason)]
    assert study(database, study_id) == (StudyState.FAILED, f"inference gave up: {reason}")
