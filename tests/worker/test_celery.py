"""The Celery app's delivery settings, and infer_study through real brokers and a real worker."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from celery.contrib.testing.worker import start_worker
from celery.signals import task_postrun
from kombu import Exchange, Queue
from sqlalchemy import select

from node.broker.app import (
    DELIVER_REPORT,
    INFER_STUDY,
    REDIS_VISIBILITY_TIMEOUT_S,
    EchoCelery,
    queue_depths,
)
from node.broker.publish import CeleryPublisher
from node.broker.wakeup import WakeUps, wake_folder
from node.config.settings import Settings, load_settings
from node.store.database import Database
from node.store.models import Job, Study
from node.store.states import JobState, StudyState
from worker.app import create_worker_app
from worker.cli import main

REDIS_URL = "redis://127.0.0.1:6379/15"


def test_delivery_guarantees_and_routes(settings: Settings) -> None:
    app = create_worker_app(settings)
    conf = app.conf
    assert (conf.task_acks_late, conf.task_reject_on_worker_lost, conf.worker_prefetch_multiplier) == (
        True,
        True,
        1,
    )
    assert (conf.task_serializer, conf.accept_content, conf.task_ignore_result) == ("json", ["json"], True)
    assert app.amqp.router.route({}, INFER_STUDY)["queue"].name == "gpu"
    assert app.amqp.router.route({}, "echo.deliver_report")["queue"].name == "io"
    # The embedded broker: kombu's SQL transport, ours (woken by each publish), chosen by class.
    assert settings.effective_broker_url.startswith("sqla+sqlite:///")
    assert conf.broker_url == settings.effective_broker_url.removeprefix("sqla+")
    assert conf.broker_transport == "node.broker.sql_transport:Transport"


@pytest.mark.parametrize(
    "url", ["redis://127.0.0.1:6379/15", "rediss://redis.example:6380/0", "sentinel://10.0.0.5:26379"]
)
def test_redis_hands_a_message_back_soon_after_the_hard_limit_not_after_an_hour(
    settings: Settings, url: str
) -> None:
    """Redis' default visibility timeout (3600 s) delayed a study by an hour after its worker was
    killed; it is now the longest hard time limit plus a margin."""
    app = create_worker_app(load_settings(data_dir=settings.data_dir, broker_url=url))
    app.loader.import_default_modules()
    timeout = app.conf.broker_transport_options["visibility_timeout"]
    hard_limits = [app.tasks[name].time_limit for name in (INFER_STUDY, DELIVER_REPORT)]
    assert timeout == REDIS_VISIBILITY_TIMEOUT_S == max(hard_limits) + 60 == 420


def test_the_embedded_broker_has_no_visibility_timeout(settings: Settings) -> None:
    options = create_worker_app(settings).conf.broker_transport_options
    assert options == {"connect_args": {"timeout": 30}}


def test_redis_keeps_kombu_s_own_transport(settings: Settings) -> None:
    app = create_worker_app(load_settings(data_dir=settings.data_dir, broker_url=REDIS_URL))
    assert (app.conf.broker_url, app.conf.broker_transport) == (REDIS_URL, None)


def test_the_tasks_carry_their_own_limits_and_guarantees(settings: Settings) -> None:
    app = create_worker_app(settings)
    app.loader.import_default_modules()
    for name, limits in ((INFER_STUDY, (300, 360)), (DELIVER_REPORT, (300, 330))):
        task = app.tasks[name]
        assert (task.acks_late, task.reject_on_worker_lost) == (True, True)
        assert (task.soft_time_limit, task.time_limit) == limits


def _jobs(database: Database, study_id: int) -> list[JobState]:
    with database.sessions() as session:
        return list(session.scalars(select(Job.state).where(Job.study_id == study_id)))


def _wait(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def _round_trip(app: EchoCelery, database: Database, study_id: int, engine) -> None:
    """Publish twice (a duplicate); a real worker runs both: one report, the duplicate skipped."""
    app.loader.import_default_modules()
    vars(app.tasks[INFER_STUDY])["engine"] = engine  # the stand-in, as if loaded in this process
    results: list[str] = []

    def collect(sender: object = None, retval: object = None, **_: object) -> None:
        results.append(str(retval))

    task_postrun.connect(collect, weak=False)
    publisher = CeleryPublisher(app)
    try:
        with start_worker(app, pool="solo", perform_ping_check=False, queues=["gpu"], shutdown_timeout=30):
            publisher.publish_inference(study_id)
            _wait(lambda: len(results) == 1, 20, "the first task")
            publisher.publish_inference(study_id)
            _wait(lambda: len(results) == 2, 20, "the duplicate")
    finally:
        task_postrun.disconnect(collect)
    assert results[0] == "reported: report 1"
    assert results[1] == f"skipped: study {study_id} is inferred, not queued"
    assert _jobs(database, study_id) == [JobState.SUCCEEDED]
    with database.sessions() as session:
        assert session.get_one(Study, study_id).state is StudyState.INFERRED
    app.tasks[INFER_STUDY].database.dispose()


@pytest.mark.integration
def test_infer_study_through_redis(
    settings: Settings, database: Database, store_study, images, engine, redis_prefix: str
) -> None:
    app = create_worker_app(load_settings(data_dir=settings.data_dir, broker_url=REDIS_URL))
    app.conf.broker_transport_options = {"global_keyprefix": redis_prefix}  # private keys in the shared db
    _round_trip(app, database, store_study(images.chest()), engine)


@pytest.mark.integration
def test_infer_study_through_the_embedded_sqlite_broker(
    settings: Settings, database: Database, store_study, images, engine
) -> None:
    app = create_worker_app(settings)
    assert settings.embedded_broker
    _round_trip(app, database, store_study(images.chest()), engine)
    assert (settings.data_dir / "broker.db").is_file()


@pytest.mark.integration
def test_a_publish_wakes_a_consumer_of_the_embedded_broker_without_waiting_for_its_poll(
    settings: Settings,
) -> None:
    """The consumer polls once a minute here and waits up to 30 s; the publish wakes it at once."""
    settings.data_dir.mkdir(parents=True)
    app = create_worker_app(settings)
    app.conf.broker_transport_options = {**app.conf.broker_transport_options, "polling_interval": 60}
    received: list[object] = []
    with app.connection_for_read() as connection:
        queue = Queue("gpu", Exchange("gpu"), "gpu")
        with connection.Consumer(queue, callbacks=[lambda body, message: received.append(body)]):
            publisher = threading.Timer(1.0, lambda: app.send_task(INFER_STUDY, args=[1]))
            publisher.start()
            started = time.monotonic()
            try:
                connection.drain_events(timeout=30)
            finally:
                publisher.join()
    assert received and time.monotonic() - started < 10, "the consumer waited for its poll"
    assert list((settings.data_dir / "broker.db-wake").iterdir()) == [], "the consumer's socket is left"


def test_a_wake_up_reaches_each_listener_and_clears_what_a_dead_process_left(tmp_path: Path) -> None:
    folder = wake_folder(tmp_path / "broker.db")
    wake_ups = WakeUps(folder)
    assert wake_ups.notify() == 0  # nobody listens yet: nothing to do, no error
    first, second = wake_ups.listener(), wake_ups.listener()
    assert first is not None and second is not None
    assert oct(folder.stat().st_mode & 0o777) == "0o700"  # only the node's user can wake its workers
    dead = folder / "12345-dead.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as gone:
        gone.bind(str(dead))  # bound, then closed: what a killed process leaves
    try:
        assert not first.wait(0)
        assert wake_ups.notify() == 2
        assert first.wait(1) and second.wait(1)
        assert not first.wait(0), "every pending wake-up is taken at once"
        assert not dead.exists()
    finally:
        first.close()
        second.close()
        wake_ups.close()
    assert sorted(folder.iterdir()) == []


def test_a_data_folder_too_deep_for_a_socket_falls_back_to_polling(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="node.broker.wakeup")  # a worker started before set ERROR
    deep = tmp_path.joinpath(*["d" * 30] * 4)
    assert WakeUps(wake_folder(deep / "broker.db")).listener() is None
    assert "broker wake-ups are off" in caplog.text


@pytest.mark.integration
def test_queue_depths_counts_waiting_messages(settings: Settings, add_study, database: Database) -> None:
    app = create_worker_app(settings)
    assert queue_depths(app) == {"gpu": 0, "io": 0}
    CeleryPublisher(app).publish_inference(add_study())
    assert queue_depths(app) == {"gpu": 1, "io": 0}


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--queues", "gpu,cpu"], {}, "--queues 'gpu,cpu': unknown queue(s) cpu; use gpu, io, train"),
        (["--loglevel", "LOUD"], {}, "--loglevel 'LOUD' is not one of DEBUG, INFO, WARNING, ERROR"),
        (["--pool", "gevent"], {}, "--pool 'gevent' is not one of prefork, solo"),
        (
            ["--pool", "solo", "--concurrency", "2"],
            {},
            "--pool solo runs one task at a time; --concurrency 2 needs prefork",
        ),
        (
            [],
            {"ECHO_MAX_ASSOCIATIONS": "lots"},
            "bad setting ECHO_MAX_ASSOCIATIONS: Input should be a valid integer",
        ),
    ],
)
def test_worker_cli_refuses_bad_input_in_one_line(
    args: list[str], env: dict[str, str], message: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ECHO_DATA_DIR", str(tmp_path))
        for name, value in env.items():
            patch.setenv(name, value)
        patch.setattr("sys.argv", ["echo-worker", *args])
        with pytest.raises(SystemExit) as exited:
            main()
    assert exited.value.code == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith(f"echo-worker: error: {message}")
