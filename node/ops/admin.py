"""`echo-admin`: the operator's view of the node. No patient names or ids: accession numbers and hashed UIDs."""

from __future__ import annotations

import gc
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from echo.errors import UserError, run_cli
from node.config.settings import Settings
from node.config.startup import settings_for_cli
from node.ops import dataset_cli, import_cli, models_cli, quality_cli, retrain_cli
from node.ops.cli_support import ConfigOption
from node.ops.cli_support import database_error as _database_error
from node.ops.cli_support import open_admin_database as _database
from node.ops.overview import (
    OutboxSummary,
    counts_by_state,
    draft_gate_counts,
    drafts_by_redecode_model,
    last_association,
    open_associations,
    outbox_summary,
    recent_studies,
)
from node.ops.overview_view import print_state_counts, print_studies
from node.ops.study_detail import study_detail
from node.ops.study_detail_view import print_study_detail, when
from node.ops.tables import output_console
from node.store.models import Study, utcnow
from node.store.states import StudyState

app = typer.Typer(
    name="echo-admin",
    help="Operate an ECHO node: status, studies, study, requeue, resend, models, purge, and the learning loop.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


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
            gate = draft_gate_counts(session)
            by_teacher = drafts_by_redecode_model(session)
            outbox = outbox_summary(session)
    except SQLAlchemyError as error:
        raise _database_error(settings, error) from None
    finally:
        database.dispose()
    console = output_console()
    print_state_counts(console, counts)
    console.print(f"queues: {_queue_line(settings)}")
    if last is None:
        console.print("last association: none yet")
    else:
        console.print(
            f"last association: {last.calling_ae} from {last.host}, {last.outcome}, started "
            f"{when(last.started_at)}, ended {when(last.ended_at)}, {last.files_stored} stored, "
            f"{last.files_failed} failed" + (f" ({last.reason})" if last.reason else "")
        )
    console.print(f"open associations: {still_open}")
    console.print(
        f"draft gate: {gate['passed']} passed, {gate['redecoded']} re-decoded"
        + (f" ({by_teacher} by the teacher)" if by_teacher else "")
        + f", {gate['held']} held (not sent)"
    )
    console.print(_outbox_line(outbox))


def _outbox_line(outbox: OutboxSummary) -> str:
    counts = ", ".join(f"{count} {status}" for status, count in outbox.counts.items())
    if outbox.oldest_waiting is None:
        return f"outbox: {counts}"
    return (
        f"outbox: {counts}; the oldest waiting since {when(outbox.oldest_waiting)}, "
        f"next try {when(outbox.next_try)}"
    )


def _queue_line(settings: Settings) -> str:
    from node.broker.app import WORKER_QUEUES, create_app, queue_depths

    try:  # train: retraining runs sent to a GPU worker (`echo-admin retrain --queue`)
        depths = queue_depths(create_app(settings), queues=WORKER_QUEUES)
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
    print_studies(output_console(), rows)


def _find(session: Session, reference: str) -> Study:
    from node.delivery.resend import ResendError, find_study

    try:
        return find_study(session, reference)
    except ResendError as error:
        raise UserError(str(error)) from None


@app.command()
def study(
    reference: str = typer.Argument(
        ..., metavar="STUDY", help="study id, Study Instance UID or accession number"
    ),
    config: Path | None = ConfigOption,
) -> None:
    """One study: instances, inference attempts, drafts, deliveries and the timeline of its states."""
    settings = settings_for_cli(config)
    database = _database(settings, config)
    try:
        with database.sessions() as session:
            detail = study_detail(session, _find(session, reference))
    except SQLAlchemyError as error:
        raise _database_error(settings, error) from None
    finally:
        database.dispose()
    print_study_detail(Console(), detail)


@app.command()
def requeue(
    reference: str | None = typer.Argument(
        None, metavar="[STUDY]", help="study id, Study Instance UID or accession number"
    ),
    state: str | None = typer.Option(
        None, "--state", help="re-queue every study in this state (only: failed)"
    ),
    config: Path | None = ConfigOption,
) -> None:
    """Send a failed study (or, with --state failed, every failed one) back to the inference queue.

    The node's assembly loop publishes it within seconds. A failed study that already has a draft
    is resent instead (`echo-admin resend`).
    """
    from node.ops.requeue import RequeueError, requeue_failed, requeue_study

    if (reference is None) == (state is None):
        raise UserError("give either a study (id, Study Instance UID or accession number) or --state failed")
    if state is not None and state.lower() != StudyState.FAILED:
        raise UserError(
            f"--state {state!r}: only failed studies can be re-queued (failed -> queued); use --state failed"
        )
    settings = settings_for_cli(config)
    database = _database(settings, config)
    console = Console()
    try:
        with database.sessions.begin() as session:
            if reference is not None:
                found = _find(session, reference)
                try:
                    requeue_study(session, found)
                except RequeueError as error:
                    raise UserError(str(error)) from None
                requeued, refused = [found.id], []
            else:
                result = requeue_failed(session)
                requeued, refused = result.requeued, result.refused
    except SQLAlchemyError as error:
        raise _database_error(settings, error) from None
    finally:
        database.dispose()
    for line in refused:
        console.print(f"left as is: {escape(line)}")
    if requeued:
        console.print(
            f"re-queued {len(requeued)} {'study' if len(requeued) == 1 else 'studies'} "
            f"({', '.join(str(study_id) for study_id in requeued)}): the node publishes "
            f"{'it' if len(requeued) == 1 else 'them'} to the inference queue within seconds"
        )
    else:
        console.print("no failed study to re-queue")


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
def purge(
    older_than: float | None = typer.Option(
        None, "--older-than", metavar="DAYS", min=0, help="age limit in days (default: ECHO_RETENTION_DAYS)"
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="only say what would be removed"),
    config: Path | None = ConfigOption,
) -> None:
    """Remove received images of finished studies (delivered, skipped, failed) older than the limit.

    The image a report was drafted from is kept while ECHO_RETENTION_KEEP_REPORTED is true.
    """
    from datetime import timedelta

    from node.store.retention import purge as purge_spool

    settings = settings_for_cli(config)
    days = older_than if older_than is not None else settings.retention_days
    if days is None:
        raise UserError(
            "no age limit: give --older-than DAYS or set ECHO_RETENTION_DAYS (unset keeps images)"
        )
    database = _database(settings, config)
    try:
        result = purge_spool(
            database.sessions,
            timedelta(days=days),
            keep_reported=settings.retention_keep_reported,
            dry_run=dry_run,
        )
    except SQLAlchemyError as error:
        raise _database_error(settings, error) from None
    finally:
        database.dispose()
    Console().print(f"{result.summary()} (older than {days:g} days)")


# the learning loop's commands
for _commands in (quality_cli, import_cli, dataset_cli, models_cli, retrain_cli):
    _commands.register(app)


def main() -> None:
    run_cli(app, "echo-admin")


def console() -> None:
    """The `echo-admin` program: `main`, then an exit that skips the interpreter's last garbage
    collection, a walk over the ~90,000 objects the imports made (a third of `echo-admin status`).
    Nothing is left to collect: the commands dispose of their database and the streams flush as usual."""
    try:
        main()
    finally:
        gc.freeze()


if __name__ == "__main__":
    console()
