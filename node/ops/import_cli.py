"""`echo-admin import`: a historical archive of signed reports and images."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from sqlalchemy.exc import SQLAlchemyError

from echo.errors import UserError
from node.config.startup import settings_for_cli
from node.ops.cli_support import ConfigOption, database_error, open_admin_database

if TYPE_CHECKING:
    from node.learning.bulk_import import ImportSummary, Tally


def register(app: typer.Typer) -> None:
    """Add this module's commands to echo-admin."""
    app.command("import")(import_archive)


def progress_bar(console: Console) -> Progress:
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    )


def import_archive(
    reports: Path | None = typer.Option(
        None,
        "--reports",
        metavar="FILE",
        help="CSV or JSONL: accession (or study_uid) and report (or findings / impression), optional signed_at",
    ),
    dicom: Path | None = typer.Option(
        None, "--dicom", metavar="DIR", help="folder of the archive's DICOM files (searched recursively)"
    ),
    config: Path | None = ConfigOption,
) -> None:
    """Import a historical archive: its images as if the PACS had sent them (never drafted: they are
    set aside as historical), and its signed reports, matched to their studies. Safe to run again:
    it resumes where an interrupted run stopped and adds nothing twice."""
    from node.learning.bulk_import import run_import  # pydicom and the labeler: not for --help

    if reports is None and dicom is None:
        raise UserError("give --reports FILE, --dicom DIR, or both")
    if reports is not None and not reports.is_file():
        raise UserError(f"--reports {reports}: no such file")
    if dicom is not None and not dicom.is_dir():
        raise UserError(f"--dicom {dicom}: no such folder")
    settings = settings_for_cli(config)
    database = open_admin_database(settings, config)
    console = Console()
    try:
        with progress_bar(console) as progress:
            summary = run_import(settings, database.sessions, reports, dicom, progress)
    except SQLAlchemyError as error:
        raise database_error(settings, error) from None
    finally:
        database.dispose()
    for line in summary_lines(summary, images=dicom is not None, texts=reports is not None):
        console.print(escape(line))


def summary_lines(summary: ImportSummary, *, images: bool = True, texts: bool = True) -> list[str]:
    lines = []
    if images:
        lines.append(
            f"images: {summary.files_stored} stored, {summary.files_already} already there, "
            f"{summary.unreadable.count} unreadable"
        )
        lines += _reasons(summary.unreadable)
    if summary.studies_settled:
        lines.append(f"studies: {summary.studies_settled} set aside as historical (skipped, never drafted)")
    if texts:
        lines.append(
            f"signed reports: {summary.reports_stored} stored, {summary.reports_duplicate} duplicates, "
            f"{summary.refused.count} refused"
        )
        lines += _reasons(summary.refused)
        lines.append(
            f"matched to their study: {summary.matched}; waiting for their study: {summary.unmatched}"
        )
    return lines


def _reasons(tally: Tally) -> list[str]:
    if not tally.count:
        return []
    lines = ["  " + "; ".join(f"{count} {why}" for why, count in tally.reasons.most_common())]
    lines += [f"    {example}" for example in tally.examples]
    if tally.count > len(tally.examples):
        lines.append(f"    ... and {tally.count - len(tally.examples)} more")
    return lines
