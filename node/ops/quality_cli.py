"""`echo-admin quality`: drafts scored against signed reports, per model version (and week)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.markup import escape
from rich.measure import Measurement
from rich.progress import Progress
from rich.table import Table
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from echo.errors import UserError
from node.config.startup import settings_for_cli
from node.ops.cli_support import ConfigOption, database_error, open_admin_database

if TYPE_CHECKING:
    from node.learning.quality import QualityRow

NO_SCORES = (
    "no scored drafts yet: a draft is scored when the signed report of its study comes back "
    "(the HL7 listener, ECHO_HL7_LISTEN, or `echo-admin import`)"
)
LEGEND = (
    "F1, precision, recall: the positive findings the drafts name against those of the signed reports "
    "(rule-based labeler)",
    "normal: studies whose signed report names no positive finding; FP per normal: positive findings the "
    "drafts name there, per study",
    "edit distance: the share of words the radiologist changed (0 signed as drafted, 1 rewritten)",
)


def register(app: typer.Typer) -> None:
    """Add this module's commands to echo-admin."""
    app.command("quality")(quality)


def quality(
    model: str | None = typer.Option(
        None, "--model", metavar="V", help="only this model version: its id, name, or version (or its start)"
    ),
    since: str | None = typer.Option(
        None, "--since", metavar="YYYY-MM-DD", help="only drafts written on or after this day (UTC)"
    ),
    by_week: bool = typer.Option(False, "--by-week", help="one row per model version and ISO week"),
    as_json: bool = typer.Option(False, "--json", help="print the rows as JSON"),
    config: Path | None = ConfigOption,
) -> None:
    """How the drafts compare with what the radiologists signed: finding F1, precision, recall, false
    positives per normal study, words changed, impressions changed. Scores new pairs first."""
    from node.learning.quality import UnknownModel, quality_report  # the labeler: not for --help

    since_at = parse_day(since) if since is not None else None
    settings = settings_for_cli(config)
    database = open_admin_database(settings, config)
    notes = Console(stderr=as_json)
    try:
        scored = score_waiting(database.sessions, Console(stderr=True))
        with database.sessions() as session:
            rows = quality_report(session, model=model, since=since_at, by_week=by_week)
    except UnknownModel as error:
        raise UserError(str(error)) from None
    except SQLAlchemyError as error:
        raise database_error(settings, error) from None
    finally:
        database.dispose()
    if scored:
        notes.print(f"scored {scored} new draft{'s' if scored != 1 else ''} against signed reports")
    if as_json:
        print(json.dumps([row.as_dict() for row in rows], indent=2))
        return
    console = Console()
    if not rows:
        console.print(escape(_nothing_line(model, since)))
        return
    table = _table(rows, by_week, model, since)
    if not console.is_terminal:  # a pipe or a file: the whole table, not folded to 80 columns
        natural = Measurement.get(console, console.options.update_width(10_000), table).maximum
        console = Console(width=max(console.width, natural))
    console.print(table)
    for line in LEGEND:
        console.print(escape(line), style="dim", highlight=False)


def parse_day(text: str) -> datetime:
    try:
        day = datetime.strptime(text.strip(), "%Y-%m-%d")
    except ValueError:
        raise UserError(f"--since {text!r} is not a date YYYY-MM-DD") from None
    return day.replace(tzinfo=UTC)


def score_waiting(sessions: sessionmaker[Session], console: Console) -> int:
    """Bring the scores up to date (match waiting signed reports, score new pairs), with progress."""
    from node.learning.scoring import count_pending, learning_tick

    with sessions() as session:
        waiting = count_pending(session)
    if not waiting:
        return learning_tick(sessions).scored  # reports matched now may bring pairs
    # on a terminal only: a pipe or a log gets no stray line from the transient bar
    with Progress(console=console, transient=True, disable=not console.is_terminal) as progress:
        task = progress.add_task("scoring drafts", total=waiting)
        tick = learning_tick(sessions, on_batch=lambda batch: progress.advance(task, batch.scored))
    return tick.scored


def _filters(model: str | None, since: str | None) -> list[tuple[str, str]]:
    return [(name, value) for name, value in (("model", model), ("since", since)) if value]


def _nothing_line(model: str | None, since: str | None) -> str:
    if model is None and since is None:
        return NO_SCORES
    return "no scored drafts for " + " ".join(f"--{name} {value}" for name, value in _filters(model, since))


_NAMES = ("id", "model", "version")
_FIGURES = (
    "studies",
    "F1",
    "precision",
    "recall",
    "normal",
    "FP per\nnormal",
    "edit\ndistance",
    "impression\nchanged",
)


def _table(rows: list[QualityRow], by_week: bool, model: str | None, since: str | None) -> Table:
    title = "Drafts against signed reports"
    if model or since:
        title += " (" + ", ".join(f"{name} {value}" for name, value in _filters(model, since)) + ")"
    table = Table(title=escape(title))
    for header in (*_NAMES, *(("week",) if by_week else ())):
        table.add_column(header, justify="right" if header == "id" else "left", overflow="fold")
    for header in _FIGURES:
        table.add_column(header, justify="right", overflow="fold")
    for row in rows:
        fp_normal = "-" if row.false_positives_per_normal is None else f"{row.false_positives_per_normal:.2f}"
        table.add_row(
            str(row.model.id),
            escape(row.model.name),
            escape(row.model.version[:12]),
            *([row.week or ""] if by_week else []),
            str(row.studies),
            f"{row.f1:.3f}",
            f"{row.precision:.3f}",
            f"{row.recall:.3f}",
            str(row.normal_studies),
            fp_normal,
            f"{row.mean_edit_distance:.3f}",
            f"{row.impression_changed_share:.0%}",
        )
    return table
