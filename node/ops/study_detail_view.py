"""`echo-admin study ID` as the operator reads it: one study's facts as rich tables (no identifiers)."""

from __future__ import annotations

from datetime import datetime

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from node.config.demo_model import is_demo_model_version
from node.ops.study_detail import StudyDetail
from node.store.states import StudyState
from node.store.uids import short_uid


def when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value is not None else "-"


def print_study_detail(console: Console, detail: StudyDetail) -> None:
    console.print(
        f"study {detail.id}: {short_uid(detail.study_instance_uid)}, accession "
        f"{detail.accession_number or '-'}, {detail.modality or '-'} {detail.body_part or ''}".rstrip()
    )
    state = f"state: {detail.state}"
    reason = detail.failure_reason or (detail.skip_reason if detail.state is StudyState.SKIPPED else None)
    console.print(state + (f" ({escape(reason)})" if reason else ""))
    if detail.identity_conflict:
        console.print(
            f"identity conflict: the instances disagree on {escape(detail.identity_conflict)}; not drafted"
        )
    received = f"received {when(detail.first_received_at)} .. {when(detail.last_received_at)}"
    if detail.enqueued_at is not None:
        received += f"; handed to the broker {when(detail.enqueued_at)}"
    elif detail.state is StudyState.QUEUED:
        received += "; waiting for the node to hand it to the broker"
    console.print(received)
    views = ", ".join(f"{view} {count}" for view, count in sorted(detail.views.items()))
    console.print(f"instances: {len(detail.instances)}" + (f" (views: {escape(views)})" if views else ""))
    _table(
        console,
        "Instances",
        ("id", "series", "SOP class", "view", "bytes", "received"),
        [
            (
                str(line.id),
                short_uid(line.series_uid),
                line.sop_class,
                line.view_position or "-",
                str(line.size),
                when(line.received_at),
            )
            for line in detail.instances
        ],
        "",
    )
    _table(
        console,
        "Jobs",
        ("id", "kind", "attempt", "state", "worker", "started", "ended", "error"),
        [
            (
                str(job.id),
                str(job.kind),
                str(job.attempt),
                str(job.state),
                job.worker or "-",
                when(job.started_at),
                when(job.ended_at),
                job.error or "",
            )
            for job in detail.jobs
        ],
        "jobs: none",
    )
    _table(
        console,
        "Reports",
        ("id", "model", "version", "tokens", "seconds", "created"),
        [
            (
                str(report.id),
                report.model_name,
                report.model_version
                + (" (demo model)" if is_demo_model_version(report.model_version) else ""),
                str(report.tokens),
                f"{report.seconds:.2f}",
                when(report.created_at),
            )
            for report in detail.reports
        ],
        "reports: none",
    )
    _table(
        console,
        "Deliveries",
        ("id", "report", "kind", "target", "status", "attempts", "next try", "last error", "ack"),
        [
            (
                str(row.id),
                str(row.report_id),
                row.kind.value.upper(),
                row.target,
                str(row.status),
                str(row.attempts),
                when(row.next_attempt_at),
                row.last_error or "",
                " ".join(part for part in (row.ack_code, row.ack_text) if part) or "-",
            )
            for row in detail.deliveries
        ],
        "deliveries: none",
    )
    _table(
        console,
        "Timeline",
        ("at", "from", "to", "reason"),
        [
            (when(event.at), str(event.from_state or "-"), str(event.to_state), event.reason or "")
            for event in detail.events
        ],
        "timeline: no events",
    )


def _table(
    console: Console, title: str, columns: tuple[str, ...], rows: list[tuple[str, ...]], empty: str
) -> None:
    if not rows:
        if empty:
            console.print(empty)
        return
    table = Table(title=title)
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*(escape(cell) for cell in row))  # database text is data, never rich markup
    console.print(table)
