"""`echo-admin quality`: drafts scored against signed reports, per model version (and week)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from echo.errors import UserError
from node.config.startup import settings_for_cli
from node.ops.cli_support import ConfigOption, database_error, open_admin_database
from node.ops.tables import Column, output_console, print_fitted

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
    console = output_console()
    if not rows:
        console.print(escape(_nothing_line(model, since)))
        return
    print_fitted(
        console, _title(model, since), quality_columns(by_week), [quality_cells(row, by_week) for row in rows]
    )
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


# At 80 columns the finding figures stay; the model's name (its version says it), the counts of
# normal studies and the precision/recall split go first.
_NAMES = (Column("id", justify="right", keep=9), Column("model", keep=1), Column("version", keep=8))
_WEEK = Column("week", keep=8)
_FIGURES = (
    Column("studies", justify="right", keep=7),
    Column("F1", justify="right", keep=9),
    Column("precision", justify="right", keep=3),
    Column("recall", justify="right", keep=3),
    Column("normal", justify="right", keep=2),
    Column("FP per\nnormal", justify="right", keep=6),
    Column("edit\ndistance", justify="right", keep=5),
    Column("impression\nchanged", justify="right", keep=4),
)


def quality_columns(by_week: bool) -> tuple[Column, ...]:
    return (*_NAMES, *((_WEEK,) if by_week else ()), *_FIGURES)


def _title(model: str | None, since: str | None) -> str:
    title = "Drafts against signed reports"
    if model or since:
        title += " (" + ", ".join(f"{name} {value}" for name, value in _filters(model, since)) + ")"
    return title


def quality_cells(row: QualityRow, by_week: bool) -> tuple[str, ...]:
    fp_normal = "-" if row.false_positives_per_normal is None else f"{row.false_positives_per_normal:.2f}"
    return (
        str(row.model.id),
        row.model.name,
        row.model.version[:12],
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
