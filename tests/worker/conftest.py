"""Fixtures for the worker: a migrated database with a queued study, and Celery apps on real brokers
(Redis on 127.0.0.1:6379/15 under a key prefix of their own, and kombu's SQL transport on SQLite)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
import redis
from sqlalchemy.orm import sessionmaker

from node.database import Database, make_engine, migrate, open_database
from node.models import Study
from node.settings import Settings, load_settings
from node.states import StudyState

REDIS_URL = "redis://127.0.0.1:6379/15"
POSTGRES_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[Database]:
    """A migrated, uniquely named database on the local PostgreSQL, dropped when the session ends."""
    name = f"echo_worker_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    engine = make_engine(f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}")
    migrate(engine)
    yield Database(engine, sessionmaker(engine, expire_on_commit=False))
    engine.dispose()
    with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


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
def add_study(database: Database) -> Callable[..., int]:
    """add_study(state=QUEUED): a study row; returns its id."""

    def add(state: StudyState = StudyState.QUEUED) -> int:
        now = datetime.now(UTC)
        with database.sessions.begin() as session:
            study = Study(
                study_instance_uid=f"1.2.826.0.1.{uuid.uuid4().int}"[:64],
                state=state,
                first_received_at=now,
                last_received_at=now,
            )
            session.add(study)
            session.flush()
            return study.id

    return add


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A key prefix of this test's own in the shared Redis database; its keys are deleted afterwards."""
    prefix = f"echo-test-{uuid.uuid4().hex[:10]}:"
    yield prefix
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(f"{prefix}*"))
    if keys:
        client.delete(*keys)
    client.close()
