"""`echo-admin retrain --queue`: the run goes to the `train` queue and a worker consuming it runs the
same retraining code with the same options; the embedded worker's queues do not include it."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from celery.contrib.testing.worker import start_worker
from celery.signals import task_postrun

from node.broker.app import QUEUES, RETRAIN_MODEL, TRAIN_QUEUE, queue_depths
from node.config.settings import Settings, bundled_model_dir
from node.learning.registry import export_facts
from node.learning.retrain import RetrainOptions, RetrainResult
from node.ops.admin import main
from node.store.database import Database
from node.store.model_versions import activate, find_or_create
from worker.app import create_worker_app


@pytest.fixture
def bundled_id(database: Database) -> int:
    with database.sessions.begin() as session:
        row = find_or_create(session, export_facts(bundled_model_dir()))
        activate(session, row)
        return row.id


@pytest.fixture
def manifest(tmp_path: Path) -> Path:
    path = tmp_path / "export" / "manifest.jsonl"
    path.parent.mkdir()
    path.write_text("")  # read by the worker (here: a stand-in), not by the command that sends it
    return path


def send(settings: Settings, args: list[str], capsys, monkeypatch) -> tuple[int, str]:
    monkeypatch.setenv("ECHO_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setattr("sys.argv", ["echo-admin", "retrain", *args])
    with pytest.raises(SystemExit) as exited:
        main()
    captured = capsys.readouterr()
    return int(exited.value.code or 0), captured.out + captured.err


def test_the_retrain_task_goes_to_the_train_queue_only(settings: Settings) -> None:
    app = create_worker_app(settings)
    app.loader.import_default_modules()
    task = app.tasks[RETRAIN_MODEL]
    assert app.amqp.router.route({}, RETRAIN_MODEL)["queue"].name == TRAIN_QUEUE
    assert task.acks_late is False  # hours of work: acknowledged when taken, never handed to a second worker
    assert TRAIN_QUEUE not in QUEUES  # the embedded worker (QUEUES) never starts a retraining


@pytest.mark.integration
def test_a_queued_retrain_runs_on_a_train_worker_with_the_same_options(
    settings: Settings, database: Database, bundled_id: int, manifest: Path, capsys, monkeypatch
) -> None:
    runs: list[RetrainOptions] = []

    def fake_retrain(sessions, settings, options, **_):
        runs.append(options)
        gate = {"passed": True, "reasons": []}
        return RetrainResult(7, gate, False, Path("/work"), {"dcd": 1.0})

    monkeypatch.setattr("worker.training.retrain", fake_retrain)
    code, out = send(
        settings,
        [
            "--from",
            str(bundled_id),
            "--data",
            str(manifest),
            "--stages",
            "rad,dcd",
            "--steps",
            "5",
            "--queue",
        ],
        capsys,
        monkeypatch,
    )
    assert code == 0 and f"sent to the {TRAIN_QUEUE} queue (task " in out
    app = create_worker_app(settings)
    assert queue_depths(app, queues=(TRAIN_QUEUE, *QUEUES)) == {TRAIN_QUEUE: 1, "gpu": 0, "io": 0}
    results: list[object] = []

    def collect(sender=None, retval=None, **_):
        if sender is not None and sender.name == RETRAIN_MODEL:
            results.append(retval)

    task_postrun.connect(collect)
    try:
        with start_worker(
            app, pool="solo", perform_ping_check=False, queues=[TRAIN_QUEUE], shutdown_timeout=30
        ):
            deadline = time.monotonic() + 20
            while not results and time.monotonic() < deadline:
                time.sleep(0.1)
    finally:
        task_postrun.disconnect(collect)
    assert results == ["candidate version 7: gate passed"]
    [options] = runs
    assert (options.from_version, options.data, options.stages) == (str(bundled_id), manifest, ("rad", "dcd"))
    assert options.steps == {"ar": 5, "rad": 5, "dcd": 5}
    app.tasks[RETRAIN_MODEL].database.dispose()


def test_a_retrain_that_cannot_run_on_the_worker_is_one_line_in_its_log(
    settings: Settings, database: Database, bundled_id: int, tmp_path: Path, caplog
) -> None:
    app = create_worker_app(settings)
    app.loader.import_default_modules()
    options = RetrainOptions(from_version=str(bundled_id), data=tmp_path / "not-mounted-here.jsonl")
    result = app.tasks[RETRAIN_MODEL].apply(kwargs={"options": options.to_json()}).get()
    assert (
        result
        == f"failed: --data {tmp_path / 'not-mounted-here.jsonl'} does not exist (`echo-admin dataset export` writes one)"
    )
    assert [record.getMessage() for record in caplog.records if record.levelname == "ERROR"] == [
        f"retrain_model: {result.removeprefix('failed: ')}"
    ]
    app.tasks[RETRAIN_MODEL].database.dispose()


def test_an_unknown_version_is_refused_before_anything_is_sent(
    settings: Settings, database: Database, manifest: Path, capsys, monkeypatch
) -> None:
    code, out = send(settings, ["--from", "404", "--data", str(manifest), "--queue"], capsys, monkeypatch)
    assert (
        code == 2
        and out.strip() == "echo-admin: error: no model version is called '404' (see `echo-admin models`)"
    )
    assert queue_depths(create_worker_app(settings), queues=(TRAIN_QUEUE,)) == {TRAIN_QUEUE: 0}
