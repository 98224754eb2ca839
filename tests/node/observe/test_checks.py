"""The readiness check of a drafting process's model: the promoted version's export, else ECHO_MODEL_DIR's."""

from __future__ import annotations

from pathlib import Path

import pytest

from echo.runtime.manifest import load_manifest
from node.config.settings import bundled_model_dir, load_settings
from node.observe.checks import served_model
from node.store.model_versions import model_facts_of
from node.store.models import ModelVersion
from node.store.states import ModelRole


@pytest.fixture
def promote(sqlite_db):
    """promote(path, sha256): a serving model_versions row for that export."""

    def add(path: Path, sha256: str) -> int:
        with sqlite_db.sessions.begin() as session:
            row = ModelVersion(
                name="student", version="abc123", path=str(path), sha256=sha256, block_size=8,
                role=ModelRole.SERVING,
            )  # fmt: skip
            session.add(row)
            session.flush()
            return row.id

    return add


def bundled_sha256() -> str:
    return model_facts_of(bundled_model_dir(), load_manifest(bundled_model_dir(), verify=False)).sha256


def test_without_a_promoted_version_the_configured_model_decides(sqlite_db, tmp_path: Path) -> None:
    assert served_model(sqlite_db.sessions, load_settings(data_dir=tmp_path))() is None
    missing = load_settings(data_dir=tmp_path, model_dir=tmp_path / "nowhere")
    assert served_model(sqlite_db.sessions, missing)() == (
        f"bad setting ECHO_MODEL_DIR: model directory {tmp_path / 'nowhere'} does not exist"
    )


def test_a_promoted_export_that_is_the_registered_one_is_ready(sqlite_db, promote, tmp_path: Path) -> None:
    promote(bundled_model_dir(), bundled_sha256())
    broken_fallback = load_settings(data_dir=tmp_path, model_dir=tmp_path / "nowhere")
    assert served_model(sqlite_db.sessions, broken_fallback)() is None


def test_a_promoted_export_that_changed_is_ready_only_while_the_configured_model_can_stand_in(
    sqlite_db, promote, tmp_path: Path
) -> None:
    version_id = promote(bundled_model_dir(), "0" * 64)
    assert served_model(sqlite_db.sessions, load_settings(data_dir=tmp_path))() is None
    broken_fallback = load_settings(data_dir=tmp_path, model_dir=tmp_path / "nowhere")
    assert served_model(sqlite_db.sessions, broken_fallback)() == (
        f"promoted version {version_id} (abc123) cannot be served: {bundled_model_dir()} holds another "
        f"export than the one registered; and bad setting ECHO_MODEL_DIR: model directory "
        f"{tmp_path / 'nowhere'} does not exist"
    )
