"""`echo-admin dataset export`: a de-identified training set from signed reports."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from sqlalchemy.exc import SQLAlchemyError

from echo.errors import UserError
from node.config.startup import settings_for_cli
from node.ops.cli_support import ConfigOption, database_error, open_admin_database
from node.ops.import_cli import progress_bar

dataset_app = typer.Typer(
    name="dataset", help="Data sets for retraining, from the site's signed reports.", no_args_is_help=True
)


def register(app: typer.Typer) -> None:
    """Add this module's commands to echo-admin."""
    app.add_typer(dataset_app, name="dataset")


def _day(option: str, text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        return datetime.strptime(text.strip(), "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        raise UserError(f"{option} {text!r} is not a date YYYY-MM-DD") from None


@dataset_app.command("export")
def export(
    out: Path = typer.Option(
        ..., "--out", metavar="DIR", help="a new or empty folder (or an earlier export)"
    ),
    since: str | None = typer.Option(
        None, "--since", metavar="YYYY-MM-DD", help="only reports signed on or after this day (UTC)"
    ),
    until: str | None = typer.Option(
        None, "--until", metavar="YYYY-MM-DD", help="only reports signed on or before this day (UTC)"
    ),
    val_share: float = typer.Option(0.1, "--val-share", help="share of patients in the validation split"),
    test_share: float = typer.Option(0.1, "--test-share", help="share of patients in the test split"),
    config: Path | None = ConfigOption,
) -> None:
    """Write manifest.jsonl and de-identified frontal images (PS3.15 basic profile) of the studies with
    a current signed report, split by patient, for echo-train; a README.txt says what and how."""
    from node.learning.export import ExportRequest, export_dataset  # pydicom, dicognito, the labeler

    since_at, until_day = _day("--since", since), _day("--until", until)
    request = ExportRequest(
        out=out,
        since=since_at,
        until=until_day + timedelta(days=1) if until_day else None,
        val_share=val_share,
        test_share=test_share,
    )
    if since_at and until_day and until_day < since_at:
        raise UserError("--until is before --since")
    settings = settings_for_cli(config)
    database = open_admin_database(settings, config)
    console = Console()
    try:
        with progress_bar(console) as progress:
            summary = export_dataset(settings, database.sessions, request, progress)
    except SQLAlchemyError as error:
        raise database_error(settings, error) from None
    finally:
        database.dispose()
    for line in summary.lines():
        console.print(escape(line))
    console.print(escape(f"written to {out}: manifest.jsonl, images/, README.txt"))
