"""The same Alembic revisions on SQLite and PostgreSQL, over real connections."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import Engine, inspect, text
from sqlalchemy.exc import IntegrityError

from node.store.database import MIGRATIONS_DIR, make_engine, migrate
from node.store.models import Base

pytestmark = pytest.mark.integration

TABLES = {
    "alembic_version",
    "draft_scores",
    "model_promotions",
    "signed_reports",
    "associations",
    "deliveries",
    "instances",
    "jobs",
    "model_versions",
    "reports",
    "studies",
    "study_events",
}


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'migrations.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    engine = make_engine(url)
    _drop_everything(engine)  # the PostgreSQL database is shared by the session's tests
    yield engine
    _drop_everything(engine)
    engine.dispose()


def _drop_everything(engine: Engine) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "base")


def test_upgrade_builds_exactly_the_models_schema(engine: Engine) -> None:
    migrate(engine)
    migrate(engine)  # a second start finds nothing to do
    assert set(inspect(engine).get_table_names()) == TABLES
    with engine.connect() as connection:
        assert connection.scalar(text("SELECT version_num FROM alembic_version")) == "0007"
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert differences == []


def test_state_columns_refuse_unknown_values(engine: Engine) -> None:
    migrate(engine)
    with pytest.raises(IntegrityError), engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO studies (study_instance_uid, state, first_received_at, last_received_at,"
                " created_at, updated_at) VALUES ('1.2', 'lost', :t, :t, :t, :t)"
            ),
            {"t": "2025-01-01 00:00:00"},
        )


def test_one_inference_attempt_number_per_study(engine: Engine) -> None:
    migrate(engine)
    insert_job = text(
        "INSERT INTO jobs (study_id, kind, attempt, state, started_at) VALUES (1, :kind, 1, 'running', :t)"
    )
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO studies (id, study_instance_uid, state, first_received_at, last_received_at,"
                " created_at, updated_at) VALUES (1, '1.2', 'queued', :t, :t, :t, :t)"
            ),
            {"t": "2025-01-01 00:00:00"},
        )
        connection.execute(insert_job, {"kind": "infer", "t": "2025-01-01 00:00:00"})
        connection.execute(insert_job, {"kind": "deliver", "t": "2025-01-01 00:00:00"})  # other kind: fine
    with pytest.raises(IntegrityError, match="(?i)unique"), engine.begin() as connection:
        connection.execute(insert_job, {"kind": "infer", "t": "2025-01-01 00:00:00"})


def test_downgrade_removes_every_table(engine: Engine) -> None:
    migrate(engine)
    _drop_everything(engine)
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}


def test_a_held_delivery_is_a_legal_status_after_0003_and_not_before(engine: Engine) -> None:
    def check_clause() -> str:
        with engine.connect() as connection:
            inspector = inspect(connection)
            [check] = [c for c in inspector.get_check_constraints("deliveries") if "status" in c["sqltext"]]
            return check["sqltext"]

    migrate(engine)
    assert "'held'" in check_clause()
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0002")
    assert "'held'" not in check_clause()


def _to(engine: Engine, revision: str, *, down: bool = False) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        (command.downgrade if down else command.upgrade)(config, revision)


_T = {"t": "2025-01-01 00:00:00"}


def _a_delivered_report(engine: Engine) -> None:
    """A study, its model, one report and its SR delivery with the delivery's job (the 0003 schema)."""
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO studies (id, study_instance_uid, state, first_received_at, last_received_at,"
                " created_at, updated_at) VALUES (1, '1.2', 'delivered', :t, :t, :t, :t)"
            ),
            _T,
        )
        connection.execute(
            text(
                "INSERT INTO model_versions (id, name, version, path, sha256, block_size, created_at, active)"
                " VALUES (1, 'm', 'v', 'p', 's', 8, :t, true)"
            ),
            _T,
        )
        connection.execute(
            text(
                "INSERT INTO reports (id, study_id, model_version_id, findings, impression, text, tokens,"
                " forwards, seconds, created_at) VALUES (1, 1, 1, 'f', 'i', 't', 1, 1, 0.1, :t)"
            ),
            _T,
        )
        connection.execute(
            text(
                "INSERT INTO deliveries (id, report_id, kind, target, message_id, status, attempts,"
                " created_at, updated_at) VALUES (1, 1, 'sr', 'PACS@h:104', '1.2.3', 'delivered', 1, :t, :t)"
            ),
            _T,
        )
        connection.execute(
            text(
                "INSERT INTO jobs (study_id, kind, delivery_id, attempt, state, started_at)"
                " VALUES (1, 'deliver', 1, 1, 'succeeded', :t)"
            ),
            _T,
        )


def _counts(engine: Engine) -> tuple[int, int, int]:
    with engine.connect() as connection:
        return tuple(  # type: ignore[return-value]
            connection.scalar(text(f"SELECT count(*) FROM {table}"))
            for table in ("reports", "deliveries", "jobs")
        )


def test_0004_keeps_every_report_delivery_and_delivery_job(engine: Engine) -> None:
    """SQLite's table copy of reports must not delete their deliveries by cascade (foreign keys on)."""
    _to(engine, "0003")
    _a_delivered_report(engine)
    _to(engine, "head")
    assert _counts(engine) == (1, 1, 1)
    with engine.connect() as connection:
        assert connection.execute(text("SELECT revision, supersedes_id FROM reports")).all() == [(1, None)]
    _to(engine, "0003", down=True)
    assert _counts(engine) == (1, 1, 1)


def test_0004_allows_a_revision_per_model_and_refuses_a_second_of_the_same_number(engine: Engine) -> None:
    _to(engine, "0003")
    _a_delivered_report(engine)
    _to(engine, "head")
    insert = text(
        "INSERT INTO reports (id, study_id, model_version_id, findings, impression, text, tokens, forwards,"
        " seconds, created_at, revision, supersedes_id) VALUES (:id, 1, 1, 'f', 'i', 't', 1, 1, 0.1, :t, 2, 1)"
    )
    with engine.begin() as connection:
        connection.execute(insert, {**_T, "id": 2})
    with pytest.raises(IntegrityError, match="(?i)unique"), engine.begin() as connection:
        connection.execute(insert, {**_T, "id": 3})
    # Back to 0003: only the newest draft of a (study, model) fits the old constraint; the drafts
    # it corrected go, with their deliveries.
    _to(engine, "0003", down=True)
    with engine.connect() as connection:
        assert connection.execute(text("SELECT id FROM reports")).scalars().all() == [2]
        assert connection.scalar(text("SELECT count(*) FROM deliveries")) == 0


def test_0007_admits_the_structured_results_and_keeps_every_delivery_and_its_job(engine: Engine) -> None:
    """SQLite cannot alter a CHECK constraint; 0007 rewrites it in place without copying deliveries (whose
    copy would cascade-delete the delivery jobs)."""
    _to(engine, "0006")
    _a_delivered_report(engine)
    air = text(
        "INSERT INTO deliveries (id, report_id, kind, target, message_id, status, attempts, created_at,"
        " updated_at) VALUES (2, 1, 'air', 'PACS@h:104', '1.2.4', 'pending', 0, :t, :t)"
    )
    with pytest.raises(IntegrityError), engine.begin() as connection:
        connection.execute(air, _T)
    _to(engine, "head")
    with engine.begin() as connection:
        connection.execute(air, _T)
        connection.execute(text(str(air).replace("(2, 1, 'air'", "(3, 1, 'fhir'")), _T)
    with pytest.raises(IntegrityError), engine.begin() as connection:
        connection.execute(text(str(air).replace("(2, 1, 'air'", "(4, 1, 'pdf'")), _T)
    assert _counts(engine) == (1, 3, 1)
    _to(engine, "0006", down=True)
    assert _counts(engine) == (1, 1, 1)  # the structured results' rows go; the SR and its job stay
    with pytest.raises(IntegrityError), engine.begin() as connection:
        connection.execute(air, _T)
