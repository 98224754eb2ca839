"""What every echo-admin command shares: the --config option and the node's database, opened with care."""

from __future__ import annotations

from pathlib import Path

import typer
from sqlalchemy import make_url
from sqlalchemy.exc import SQLAlchemyError

from echo.errors import UserError
from node.config.settings import Settings
from node.config.startup import check_database
from node.store.database import Database, open_database, safe_url

ConfigOption = typer.Option(None, "--config", help="settings TOML file (ECHO_* variables win)")


def open_admin_database(settings: Settings, config: Path | None = None) -> Database:
    """The node's database; a SQLite file that does not exist yet is an error, not a new empty file,
    and a server that does not answer is one line after a few seconds, not a long hang."""
    url = make_url(settings.effective_database_url)
    if url.get_backend_name() == "sqlite" and url.database and not Path(url.database).is_file():
        raise UserError(f"no database at {url.database}: start `echo-node serve` once to create it")
    check_database(settings, config)
    return open_database(settings)


def database_error(settings: Settings, error: SQLAlchemyError) -> UserError:
    where = safe_url(settings.effective_database_url)
    cause = str(getattr(error, "orig", None) or error).splitlines()[0]
    return UserError(f"cannot read the database at {where} (has `echo-node serve` run once?): {cause}")
