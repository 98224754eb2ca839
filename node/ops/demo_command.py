"""What `echo-node demo` prints: the report, the model that wrote it, its timings, its deliveries."""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy import make_url
from sqlalchemy.exc import SQLAlchemyError

from echo.errors import UserError
from exporters.ae_title import check_ae_title
from node.config.settings import Settings
from node.ops.demo import DemoError, DemoOutcome, fresh_demo_copy, send_study, wait_for_outcome
from node.store.database import open_database, safe_url
from node.store.uids import short_uid


def run_demo(
    settings: Settings, host: str, port: int, called_ae: str, calling_ae: str, timeout: float
) -> DemoOutcome:
    for option, title in (("--calling-ae", calling_ae), ("--called-ae", called_ae)):
        try:
            check_ae_title(title, option)
        except ValueError as error:
            raise UserError(str(error)) from None
    console = Console()
    try:
        dataset = fresh_demo_copy()
        started = time.monotonic()
        send_study(
            dataset, host, port, called_ae=called_ae, calling_ae=calling_ae, timeout=min(timeout, 30.0)
        )
        console.print(
            f"sent the demo study (accession {dataset.AccessionNumber}, study {short_uid(dataset.StudyInstanceUID)}) "
            f"to {called_ae}@{host}:{port}"
        )
        outcome = _wait(settings, dataset.StudyInstanceUID, timeout, console)
    except DemoError as error:
        raise UserError(str(error)) from None
    _print(console, outcome, time.monotonic() - started)
    return outcome


def _wait(settings: Settings, study_uid: str, timeout: float, console: Console) -> DemoOutcome:
    url = make_url(settings.effective_database_url)
    if url.get_backend_name() == "sqlite" and url.database and not Path(url.database).is_file():
        raise DemoError(
            f"no node database at {url.database}: run the demo with the node's settings "
            "(--config or the same ECHO_* variables)"
        )
    database = open_database(settings)
    try:
        with Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        ) as progress:
            waiting = progress.add_task("waiting for the node to receive the study", total=None)

            def show(outcome: DemoOutcome | None) -> None:
                if outcome is not None:
                    progress.update(waiting, description=f"waiting for the report: study {outcome.state}")

            return wait_for_outcome(database.sessions, study_uid, timeout, on_poll=show)
    except SQLAlchemyError as error:
        cause = str(getattr(error, "orig", None) or error).splitlines()[0]
        raise DemoError(
            f"cannot read the node's database at {safe_url(settings.effective_database_url)}: {cause}"
        ) from None
    finally:
        database.dispose()


def _print(console: Console, outcome: DemoOutcome, elapsed: float) -> None:
    report = outcome.report
    assert report is not None
    # Generated text is data, never rich markup: a "[...]" in it must print as it is.
    body = (
        f"[bold]FINDINGS:[/bold] {escape(report.findings) or '-'}\n"
        f"[bold]IMPRESSION:[/bold] {escape(report.impression) or '-'}"
    )
    console.print(
        Panel(body, title=f"Draft report ({report.model_name} {report.model_version})", expand=False)
    )
    stages = ", ".join(f"{name} {seconds * 1000:.0f} ms" for name, seconds in report.timings.items())
    console.print(
        f"model: {report.model_name} version {report.model_version}; {report.tokens} tokens in "
        f"{report.forwards} forward passes, {report.seconds * 1000:.0f} ms"
        + (f" ({stages})" if stages else "")
    )
    if report.view_reason:
        console.print(f"image read: {escape(report.view_reason)}")
    if outcome.deliveries:
        table = Table(title="Deliveries")
        for column in ("kind", "target", "status", "attempts", "ack", "last error"):
            table.add_column(column, overflow="fold")
        for line in outcome.deliveries:
            table.add_row(
                line.kind,
                line.target,
                str(line.status),
                str(line.attempts),
                line.ack_code or "-",
                line.last_error or "",
            )
        console.print(table)
    else:
        console.print("deliveries: none (neither ECHO_PACS nor ECHO_RIS is set)")
    console.print(f"study {outcome.state} after {elapsed:.1f} s")
