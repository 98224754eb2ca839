"""`echo-admin`: the operator's view of the node. No patient names or ids: accession numbers and hashed UIDs."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy import make_url
from sqlalchemy.exc import SQLAlchemyError

from echo.errors import UserError, run_cli
from node.config.settings import Settings
from node.config.startup import settings_for_cli
from node.ops.overview import counts_by_state, last_association, open_associations, recent_studies
from node.store.database import Database, open_database, safe_url
from node.store.model_versions import list_model_versions
from node.store.models import utcnow
from node.store.states import StudyState
from node.store.uids import short_uid

app = typer.Typer(
    name="echo-admin",
    help="Operate an ECHO node: status, studies, resend, models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ConfigOption = typer.Option(None, "--config", help="settings TOML file (ECHO_* variables win)")


def _time(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def _database(settings: Settings) -> Database:
    """The node's database; a SQLite file that does not exist yet is an error, not a new empty file."""
    url = make_url(settings.effective_database_url)
    if url.get_backend_name() == "sqlite" and url.database and not Path(url.database).is_file():
        raise UserError(f"no database at {url.database}: start `echo-node serve` once to create it")
    return open_database(settings)


def _database_error(settings: Settings, error: SQLAlchemyError) -> UserError:
    where = safe_url(settings.effective_database_url)
    cause = str(getattr(error, "orig", None) or error).splitlines()[0]
    return UserError(f"cannot read the database at {where} (has `echo-node serve` run once?): {cause}")


@app.command()
def status(config: Path | None = ConfigOption) -> None:
    """Studies per state, messages waiting in the queues, and the last association."""
    settings = settings_for_cli(config)
    database = _database(settings)
    try:
        with database.sessions() as session:
            counts = counts_by_state(session)
            last = last_association(session)
            still_open = open_associations(session)
    except SQLAlchemyError as error:
        raise _database_error(settings, error) from None
    finally:
        database.dispose()
    console = Console()
    table = Table(title="Studies")
    table.add_column("state")
    table.add_column("studies", justify="right")
    for state, count in counts.items():
        table.add_row(str(state), str(count))
    console.print(table)
    console.print(f"queues: {_queue_line(settings)}")
    if last is None:
        console.print("last association: none yet")
    else:
        console.print(
            f"last association: {last.calling_ae} from {last.host}, {last.outcome}, started "
            f"{_time(last.started_at)}, ended {_time(last.ended_at)}, {last.files_stored} stored, "
            f"{last.files_failed} failed" + (f" ({last.reason})" if last.reason else "")
        )
    console.print(f"open associations: {still_open}")


def _queue_line(settings: Settings) -> str:
    from node.broker.app import create_app, queue_depths

    try:
        depths = queue_depths(create_app(settings))
    except Exception as error:  # broker down or unreachable: the status must still print
        return f"broker unreachable ({type(error).__name__})"
    return ", ".join(f"{queue} {count} waiting" for queue, count in depths.items())


@app.command()
def studies(
    state: str | None = typer.Option(None, "--state", help=f"only this state: {', '.join(StudyState)}"),
    limit: int = typer.Option(20, "--limit", min=1, help="at most this many, newest first"),
    config: Path | None = ConfigOption,
) -> None:
    """Recent studies: accession, state, times; UIDs hashed."""
    chosen: StudyState | None = None
    if state is not None:
        try:
            chosen = StudyState(state.lower())
        except ValueError:
            raise UserError(f"--state {state!r} is not one of {', '.join(StudyState)}") from None
    settings = settings_for_cli(config)
    database = _database(settings)
    try:
        with database.sessions() as session:
            rows = recent_studies(session, chosen, limit)
    except SQLAlchemyError as error:
        raise _database_error(settings, error) from None
    finally:
        database.dispose()
    table = Table(title=f"Studies ({len(rows)} shown)")
    for column in (
        "id",
        "study",
        "accession",
        "modality",
        "state",
        "instances",
        "first received",
        "last received",
        "updated",
        "note",
    ):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(
            str(row.id),
            short_uid(row.study_instance_uid),
            row.accession_number or "-",
            row.modality or "-",
            str(row.state),
            str(row.instances),
            _time(row.first_received_at),
            _time(row.last_received_at),
            _time(row.updated_at),
            row.skip_reason or "",
        )
    Console().print(table)


@app.command()
def resend(
    study: str = typer.Argument(..., help="study id, Study Instance UID or accession number"),
    everything: bool = typer.Option(
        False, "--all", help="also send again what its destination already accepted (a duplicate there)"
    ),
    config: Path | None = ConfigOption,
) -> None:
    """Send a study's report again to the PACS and RIS configured now: what was not delivered, or --all."""
    from node.delivery.resend import ResendError, resend_report  # hl7apy and pydicom: not for --help

    settings = settings_for_cli(config)
    database = _database(settings)
    try:
        with database.sessions.begin() as session:
            result = resend_report(session, settings, study, utcnow(), include_delivered=everything)
    except ResendError as error:
        raise UserError(str(error)) from None
    except SQLAlchemyError as error:
        raise _database_error(settings, error) from None
    finally:
        database.dispose()
    console = Console()
    for line in result.reset:
        console.print(f"reset: {line}")
    for line in result.created:
        console.print(f"new: {line}")
    for line in result.untouched:
        console.print(f"left as is (not configured now): {line}")
    for line in result.already_delivered:
        console.print(f"left as is (already delivered; --all sends it again): {line}")
    console.print(
        f"study {result.study_id}, report {result.report_id}: {result.state}; "
        "the node's delivery loop sends it within seconds"
    )


@app.command()
def models(config: Path | None = ConfigOption) -> None:
    """Model versions that wrote reports here; the active one is what the workers serve now."""
    settings = settings_for_cli(config)
    database = _database(settings)
    try:
        with database.sessions() as session:
            rows = list_model_versions(session)
    except SQLAlchemyError as error:
        raise _database_error(settings, error) from None
    finally:
        database.dispose()
    console = Console()
    if not rows:
        console.print("no model versions yet: a worker registers its model with the first study it reports")
        return
    table = Table(title="Model versions")
    for column in ("id", "name", "version", "block", "reports", "registered", "active", "path"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(
            str(row.id),
            row.name,
            row.version,
            str(row.block_size),
            str(row.reports),
            _time(row.created_at),
            "yes" if row.active else "",
            row.path,
        )
    console.print(table)


def main() -> None:
    run_cli(app, "echo-admin")


if __name__ == "__main__":
    main()
