"""Alembic environment: the same revisions on SQLite (embedded) and PostgreSQL (production).

The node runs these at start through `node.store.database.migrate`, handing over its own connection;
``alembic upgrade head`` from the repository root works too and reads the URL from the node's
settings (``ECHO_DATABASE_URL`` / ``ECHO_CONFIG``) unless alembic.ini's ``sqlalchemy.url`` is set.
"""

from __future__ import annotations

from logging.config import fileConfig

from alembic import context

from node.config.settings import load_settings
from node.store.database import make_engine
from node.store.models import Base

config = context.config
if config.config_file_name and "connection" not in config.attributes:
    fileConfig(config.config_file_name, disable_existing_loggers=False)
target_metadata = Base.metadata


def _run(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite cannot ALTER most things
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = config.get_main_option("sqlalchemy.url") or load_settings().effective_database_url
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            _run(connection)
    finally:
        engine.dispose()


def run_offline() -> None:
    url = config.get_main_option("sqlalchemy.url") or load_settings().effective_database_url
    context.configure(url=url, target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
