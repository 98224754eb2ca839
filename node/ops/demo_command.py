"""What `echo-node demo` prints: the report, the model that wrote it, its timings, its deliveries.

The demo study is a synthetic patient. Before sending it, the demo reads the node's settings (the
same ones it reads the answer with): when the node would pass the draft on to a PACS or RIS that is
not on this machine, or the node is a production one (see `Settings.production_reason`), the
synthetic patient and its draft would land in the hospital's systems, so the demo refuses unless
told `--yes-send-to-production`. A draft written by the bundled demo model says so.
"""

from __future__ import annotations

import ipaddress
import time
from pathlib import Path
from urllib.parse import urlsplit

from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy import make_url
from sqlalchemy.exc import SQLAlchemyError

from echo.errors import UserError
from exporters.ae_title import check_ae_title
from node.config.demo_model import is_demo_model_version
from node.config.settings import Settings
from node.ops.demo import DemoError, DemoOutcome, fresh_demo_copy, send_study, wait_for_outcome
from node.store.database import open_database, safe_url
from node.store.uids import short_uid

PRODUCTION_FLAG = "--yes-send-to-production"


def is_loopback(host: str) -> bool:
    if host.lower() in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: assume another machine
        return False


def production_destinations(settings: Settings) -> list[str]:
    """The PACS/RIS/FHIR server the node would send the demo's draft to that may be the hospital's own."""
    production = settings.production_reason is not None
    found = []
    for variable, peer in (("ECHO_PACS", settings.pacs), ("ECHO_RIS", settings.ris)):
        if peer is not None and (production or not is_loopback(peer.host)):
            found.append(f"{peer} ({variable})")
    fhir_host = urlsplit(settings.fhir_url).hostname if settings.fhir_url else None
    if settings.fhir is not None and (production or (fhir_host is not None and not is_loopback(fhir_host))):
        found.append(f"{settings.fhir} (ECHO_FHIR)")
    return found


def check_destinations(settings: Settings, send_to_production: bool) -> None:
    destinations = production_destinations(settings)
    if destinations and not send_to_production:
        where = " and ".join(destinations)
        why = (
            f"; this is a production node: {settings.production_reason}" if settings.production_reason else ""
        )
        raise UserError(
            f"the node sends its drafts to {where}{why}: the demo's synthetic patient and its draft "
            f"would land there; pass {PRODUCTION_FLAG} to send it anyway"
        )


def run_demo(
    settings: Settings,
    host: str,
    port: int,
    called_ae: str,
    calling_ae: str,
    timeout: float,
    *,
    send_to_production: bool = False,
) -> DemoOutcome:
    for option, title in (("--calling-ae", calling_ae), ("--called-ae", called_ae)):
        try:
            check_ae_title(title, option)
        except ValueError as error:
            raise UserError(str(error)) from None
    check_destinations(settings, send_to_production)
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
    if report.decoding:
        gate = {"redecoded": ": the one-step draft failed the draft gate and was re-decoded"}
        console.print(f"decoding: {escape(report.decoding)}{gate.get(report.gate or '', '')}")
    if is_demo_model_version(report.model_version):
        console.print(
            "[bold yellow]this draft was written by the bundled DEMO model, trained on synthetic images "
            "only: not for clinical use[/bold yellow] (a site serves its own model: ECHO_MODEL_DIR)"
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
