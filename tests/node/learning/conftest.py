"""Fixtures the learning-loop tests share: a migrated SQLite node database and the bundled model
registered in it the way a worker registers the model it loads."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from node.config.settings import Settings, bundled_model_dir, load_settings
from node.learning.registry import export_facts
from node.store.database import Database, migrate, open_database
from node.store.model_versions import activate, find_or_create


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(data_dir=tmp_path / "data")


@pytest.fixture
def database(settings: Settings) -> Iterator[Database]:
    database = open_database(settings)
    migrate(database.engine)
    yield database
    database.dispose()


@pytest.fixture
def bundled_id(database: Database) -> int:
    """The bundled model as a worker registers it: role registered, active; its row id."""
    with database.sessions.begin() as session:
        row = find_or_create(session, export_facts(bundled_model_dir()))
        activate(session, row)
        return row.id
