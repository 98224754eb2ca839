"""The worker's own figures (`worker.figures`): tasks by outcome from Celery's signals, and the model a
process holds. The tasks run eagerly here, in this process (no figures folder: in-memory values)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from prometheus_client import Gauge

from node.broker.app import DELIVER_REPORT, INFER_STUDY, EchoCelery
from node.config.settings import Settings
from node.observe.http import registry_with
from node.store.database import Database
from worker.app import create_worker_app
from worker.figures import MODEL_LOADED, TASKS, HeldModel


@pytest.fixture
def app(settings: Settings, database: Database) -> Iterator[EchoCelery]:
    app = create_worker_app(settings)
    app.loader.import_default_modules()
    yield app
    for name in (INFER_STUDY, DELIVER_REPORT):
        if "database" in vars(app.tasks[name]):
            app.tasks[name].database.dispose()


def count(task: str, outcome: str) -> float:
    labels = {"task": task, "outcome": outcome}
    return registry_with(TASKS).get_sample_value("echo_worker_tasks_total", labels) or 0.0


def loaded(model: str, version: str, provider: str) -> float | None:
    labels = {"model": model, "version": version, "provider": provider}
    return registry_with(MODEL_LOADED).get_sample_value("echo_worker_model_loaded", labels)


def test_each_run_of_a_task_is_counted_once_by_outcome(
    app: EchoCelery, tmp_path, store_study, images
) -> None:
    before = {outcome: count(INFER_STUDY, outcome) for outcome in ("succeeded", "failed", "retried")}
    delivered = count(DELIVER_REPORT, "succeeded")

    assert app.tasks[DELIVER_REPORT].apply(args=[987654]).successful()
    app.echo_settings = app.echo_settings.model_copy(update={"model_dir": tmp_path / "no-model"})
    assert app.tasks[INFER_STUDY].apply(args=[store_study(images.chest())]).failed()  # 5 retries, then out

    assert count(DELIVER_REPORT, "succeeded") == delivered + 1
    assert count(INFER_STUDY, "retried") == before["retried"] + 5
    assert count(INFER_STUDY, "failed") == before["failed"] + 1
    assert count(INFER_STUDY, "succeeded") == before["succeeded"]


def test_the_model_an_inference_process_holds_is_shown_after_its_study(
    app: EchoCelery, store_study, images, engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    def load(model_dir, *args, **kwargs):
        engine.providers, engine.start_seconds = ["CUDAExecutionProvider", "CPUExecutionProvider"], 0.0
        return engine

    monkeypatch.setattr("echo.runtime.Engine.load", load)
    labels = (engine.manifest.name, engine.manifest.version, "CUDAExecutionProvider")
    assert app.tasks[INFER_STUDY].apply(args=[store_study(images.chest())]).successful()
    assert loaded(*labels) == 1


def test_a_switch_of_model_moves_the_figure_to_the_new_version() -> None:
    gauge = Gauge("echo_test_model_loaded", "test", ["model", "version", "provider"], registry=None)
    held = HeldModel(gauge)

    class Engine:
        def __init__(self, version: str) -> None:
            self.manifest = type("Manifest", (), {"name": "student", "version": version})()
            self.providers = ["CPUExecutionProvider"]

    def value(version: str) -> float | None:
        labels = {"model": "student", "version": version, "provider": "CPUExecutionProvider"}
        return registry_with(gauge).get_sample_value("echo_test_model_loaded", labels)

    held.show(Engine("v1"))
    held.show(Engine("v1"))
    assert (value("v1"), value("v2")) == (1, None)
    held.show(Engine("v2"))
    assert (value("v1"), value("v2")) == (0, 1)
    held.show(None)
    assert value("v2") == 0
