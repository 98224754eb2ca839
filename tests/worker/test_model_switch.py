"""Workers switch to the promoted model without a restart, every report keeps the version that wrote
it, and a promoted model that will not load leaves the worker drafting with the model it holds."""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from sqlalchemy import select

from node.broker.app import INFER_STUDY, EchoCelery
from node.config.settings import Settings, bundled_model_dir
from node.learning.registry import export_facts, promote, register_candidate, rollback
from node.store.database import Database
from node.store.model_versions import find_or_create
from node.store.models import ModelVersion, Report, Study
from node.store.states import ModelRole, StudyState
from worker.app import create_worker_app
from worker.served_model import ServedModel

PASSED = {"passed": True, "decision": "promote", "reasons": []}


@pytest.fixture
def app(settings: Settings, database: Database) -> Iterator[EchoCelery]:
    app = create_worker_app(settings.model_copy(update={"draft_gate": False}))  # any draft will do
    app.loader.import_default_modules()
    yield app
    if "database" in vars(app.tasks[INFER_STUDY]):
        app.tasks[INFER_STUDY].database.dispose()


@pytest.fixture
def loads(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The real engine, with every load of a served model recorded (a re-decode model inside one
    is loaded by its load: not a load of its own)."""
    from echo.runtime import Engine

    real, seen, depth = Engine.load, [], [0]

    def load(model_dir, *args, **kwargs):
        if depth[0] == 0:
            seen.append(Path(model_dir).resolve())
        depth[0] += 1
        try:
            return real(model_dir, *args, **kwargs)
        finally:
            depth[0] -= 1

    monkeypatch.setattr("echo.runtime.Engine.load", load)
    return seen


def second_model(directory: Path) -> Path:
    """The bundled export with another version string in its manifest: another model to the registry."""
    shutil.copytree(bundled_model_dir(), directory)
    manifest = json.loads((directory / "manifest.json").read_text())
    manifest["version"] = "5e4d000000000002"
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return directory


def promote_second(database: Database, settings: Settings, tmp_path: Path) -> SimpleNamespace:
    with database.sessions.begin() as session:
        row = register_candidate(session, settings, second_model(tmp_path / "export"))
        row.gate = PASSED
        promote(session, row, "test")
        return SimpleNamespace(id=row.id, path=Path(row.path))


def draft(app: EchoCelery, store_study, images) -> int:
    study_id = store_study(images.chest())
    assert app.tasks[INFER_STUDY].apply(args=[study_id]).get().startswith("reported: report ")
    return study_id


def written_by(database: Database) -> list[str]:
    with database.sessions() as session:
        query = (
            select(ModelVersion.version)
            .join(Report, Report.model_version_id == ModelVersion.id)
            .order_by(Report.id)
        )
        return list(session.scalars(query))


def test_a_promotion_and_a_rollback_switch_the_worker_between_studies(
    app: EchoCelery, database: Database, settings: Settings, store_study, images, loads, tmp_path: Path
) -> None:
    app.tasks[INFER_STUDY].served.check_every_s = 0  # look before every study (a worker: every 5 s)
    bundled = export_facts(bundled_model_dir()).version
    draft(app, store_study, images)
    second = promote_second(database, settings, tmp_path)
    draft(app, store_study, images)
    draft(app, store_study, images)
    with database.sessions.begin() as session:
        rollback(session, "test")
    draft(app, store_study, images)
    assert written_by(database) == [bundled, "5e4d000000000002", "5e4d000000000002", bundled]
    assert loads == [bundled_model_dir().resolve(), second.path, bundled_model_dir().resolve()]
    with database.sessions() as session:
        rows = {row.version: row for row in session.scalars(select(ModelVersion))}
    assert rows[bundled].role == ModelRole.SERVING and rows[bundled].active
    assert rows["5e4d000000000002"].role == ModelRole.RETIRED and not rows["5e4d000000000002"].active


def test_a_broken_promoted_model_leaves_the_worker_drafting_with_its_model(
    app: EchoCelery,
    database: Database,
    settings: Settings,
    store_study,
    images,
    loads,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    app.tasks[INFER_STUDY].served.check_every_s = 0
    bundled = export_facts(bundled_model_dir()).version
    draft(app, store_study, images)
    second = promote_second(database, settings, tmp_path)
    (second.path / "decoder.onnx").write_bytes(b"half a graph")  # the disk went bad after promotion
    with caplog.at_level(logging.INFO, logger="worker.served_model"):
        study_id = draft(app, store_study, images)
        draft(app, store_study, images)  # not tried again at once: once a minute
    assert written_by(database) == [bundled, bundled, bundled]
    assert loads == [bundled_model_dir().resolve(), second.path]
    [error] = [record for record in caplog.records if record.levelno == logging.ERROR]
    assert error.getMessage().startswith(
        f"model version {second.id} (5e4d000000000002) is promoted but cannot be served: "
    )
    assert "decoder.onnx: checksum mismatch" in error.getMessage()
    assert error.getMessage().endswith("; keeping ECHO_MODEL_DIR")
    with database.sessions() as session:
        assert session.get_one(Study, study_id).state is StudyState.INFERRED


# ---- the choice itself, with stand-in engines and a clock ---------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def promote_row(database: Database, version: str, path: Path) -> int:
    with database.sessions.begin() as session:
        for row in session.scalars(select(ModelVersion).where(ModelVersion.role == ModelRole.SERVING)):
            row.role = ModelRole.RETIRED
        session.flush()
        facts = export_facts(bundled_model_dir())
        row = find_or_create(
            session, type(facts)("student", version, str(path), facts.sha256, facts.block_size)
        )
        row.role = ModelRole.SERVING
        return row.id


def test_the_serving_row_is_read_once_per_interval(database: Database) -> None:
    clock, loaded = Clock(), []

    def load(path: Path):
        loaded.append(path)
        return SimpleNamespace(manifest=SimpleNamespace(name="student", version="a"), path=path)

    choice = ServedModel(database.sessions, lambda: "configured", load, clock=clock)
    assert choice.engine() == "configured"
    promote_row(database, "a", bundled_model_dir())
    clock.now += 4.9
    assert choice.engine() == "configured"  # the answer of 4.9 s ago still holds
    clock.now += 0.1
    choice.engine()  # looked again: tries the promoted version (this stand-in's manifest is not it)
    assert loaded == [bundled_model_dir()]


def test_a_broken_promotion_keeps_the_promoted_model_held_and_is_tried_again_later(
    database: Database, tmp_path: Path
) -> None:
    clock, broken, tried = Clock(), set(), []
    first = bundled_model_dir()
    version = json.loads((first / "manifest.json").read_text())["version"]

    def load(path: Path):
        tried.append(path)
        if path in broken:
            raise OSError("disk error")
        return SimpleNamespace(
            manifest=SimpleNamespace(
                name="student", version=version, generation=SimpleNamespace(block_size=8)
            ),
            path=path,
        )

    choice = ServedModel(database.sessions, lambda: "configured", load, check_every_s=0, clock=clock)
    promote_row(database, version, first)
    held = choice.engine()
    assert held.path == first
    second = tmp_path / "second"
    shutil.copytree(first, second)
    broken.add(second)
    promote_row(database, "0" * 16, second)
    assert choice.engine() is held  # keeps what it has, does not fall back to ECHO_MODEL_DIR
    clock.now += 59
    assert choice.engine() is held and tried == [first, second]  # not tried again for a minute
    clock.now += 1
    assert choice.engine() is held and tried == [first, second, second]
