"""The one owner of the database: engine, session factory and migrations, built from Settings.

SQLite (the embedded default) is opened in WAL mode with a busy timeout and foreign keys on, and
every transaction starts with ``BEGIN IMMEDIATE``: the SCP's threads and the worker write the same
file, and a transaction that read first and wrote later would otherwise fail with "database is
locked" instead of waiting its turn. PostgreSQL needs none of this.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, make_url
from sqlalchemy.orm import Session, sessionmaker

from node.config.settings import Settings

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 30_000


def safe_url(url: str) -> str:
    """The URL with any password hidden, fit for logs and error messages."""
    return make_url(url).render_as_string(hide_password=True)


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves (below)
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=FULL")  # a committed row survives power loss
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def make_engine(url: str) -> Engine:
    """An engine for `url`; for a SQLite file, its folder is created and the pragmas set.

    Errors never echo the statement's parameters: they hold patient data and end up in logs.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True, hide_parameters=True)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, hide_parameters=True)
    _configure_sqlite(engine)
    return engine


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision (`alembic upgrade head`), over `engine`.

    alembic is imported here, not at the top: the commands that never migrate (`echo-admin status`
    and the like) should not pay for its import."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


@dataclass
class Database:
    engine: Engine
    sessions: sessionmaker[Session]

    def dispose(self) -> None:
        self.engine.dispose()


def open_database(settings: Settings) -> Database:
    """Engine and session factory for Settings.effective_database_url (no migration: see `migrate`)."""
    engine = make_engine(settings.effective_database_url)
    return Database(engine, sessionmaker(engine, expire_on_commit=False))
