"""What the status page shows, read from the database in one short read-only session.

The operator's questions are answered by the queries the admin CLI already uses
(`node.ops.overview`, `node.learning.quality`, `node.store.model_versions`); this module adds only
what the page needs besides: when each study was drafted and delivered (its newest moves to those
states), the failed and held deliveries, and the activity of the last day for the plots.

Nothing here carries who the patient is: a study is its node id, its state and its times. Free
text that reaches the page (failure reasons, delivery errors, which a RIS may fill with its own
words) is scrubbed of the identifiers the database holds for the studies concerned.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from statistics import median
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from node.learning.quality import QualityRow, aggregate, load_scores
from node.ops.overview import (
    OutboxSummary,
    StudyRow,
    counts_by_state,
    draft_gate_counts,
    outbox_summary,
    recent_studies,
)
from node.store.model_versions import active_version, serving_version
from node.store.models import Delivery, Report, Study, StudyEvent
from node.store.states import DeliveryKind, DeliveryStatus, StudyState

RECENT_STUDIES = 50
RECENT_FAILURES = 20
ACTIVITY_WINDOW = timedelta(days=1)
QUALITY_WINDOW = timedelta(weeks=12)
REDACTED = "[redacted]"


@dataclass(frozen=True)
class StudyLine:
    """One study as the page shows it: its node id, state and timings, never who it is about."""

    id: int
    state: StudyState
    modality: str | None
    instances: int
    first_received_at: datetime
    last_received_at: datetime
    drafted_at: datetime | None  # its newest move to "inferred"
    delivered_at: datetime | None  # its newest move to "delivered", when after the draft
    note: str  # why it is where it is (skip or failure reason, identity conflict); scrubbed

    @property
    def seconds_to_draft(self) -> float | None:
        """From the last instance received to the draft: the quiet period, the queue and the model."""
        return _seconds(self.last_received_at, self.drafted_at)

    @property
    def seconds_to_deliver(self) -> float | None:
        return _seconds(self.last_received_at, self.delivered_at)


@dataclass(frozen=True)
class FailedStudy:
    id: int
    at: datetime
    reason: str


@dataclass(frozen=True)
class FailedDelivery:
    id: int
    study_id: int
    kind: DeliveryKind
    target: str
    status: DeliveryStatus
    attempts: int
    at: datetime
    error: str


@dataclass(frozen=True)
class ServedModel:
    """The model the workers serve now: the promoted one, else the one a worker loaded last."""

    id: int
    name: str
    version: str
    role: str
    block_size: int
    parent_id: int | None
    created_at: datetime
    promoted_at: datetime | None
    reports: int
    gate: dict[str, Any] | None


@dataclass(frozen=True)
class LatencyPoint:
    drafted_at: datetime
    seconds_to_draft: float
    seconds_to_deliver: float | None


@dataclass(frozen=True)
class Activity:
    """The last day: each draft's latency, and drafts and failures per hour (oldest hour first)."""

    since: datetime
    latency: list[LatencyPoint]
    hours: list[datetime]  # the start of each hour
    drafts_per_hour: list[int]
    failures_per_hour: list[int]

    @property
    def median_to_draft(self) -> float | None:
        return _median([point.seconds_to_draft for point in self.latency])

    @property
    def median_to_deliver(self) -> float | None:
        return _median([p.seconds_to_deliver for p in self.latency if p.seconds_to_deliver is not None])


@dataclass(frozen=True)
class StatusSnapshot:
    now: datetime
    counts: dict[StudyState, int]
    studies: list[StudyLine]
    failed_studies: list[FailedStudy]
    failed_deliveries: list[FailedDelivery]
    draft_gate: dict[str, int]
    outbox: OutboxSummary
    model: ServedModel | None
    activity: Activity
    quality_by_model: list[QualityRow]  # over QUALITY_WINDOW, one row per model version
    quality_by_week: list[QualityRow]  # the same drafts, per model version and ISO week


def read_snapshot(session: Session, now: datetime) -> StatusSnapshot:
    """Everything the page shows, as of `now`."""
    rows = recent_studies(session, None, RECENT_STUDIES)
    failed = recent_studies(session, StudyState.FAILED, RECENT_FAILURES)
    deliveries = failed_deliveries(session, RECENT_FAILURES)
    redact = Redactor.for_studies(
        session, [row.id for row in (*rows, *failed)] + [d.study_id for d in deliveries]
    )
    times = state_times(session, study_ids=[row.id for row in rows])
    scores = load_scores(session, since=now - QUALITY_WINDOW)
    return StatusSnapshot(
        now=now,
        counts=counts_by_state(session),
        studies=[_study_line(row, times.get(row.id, {}), redact) for row in rows],
        failed_studies=[
            FailedStudy(row.id, row.updated_at, redact(row.id, row.failure_reason or "no reason recorded"))
            for row in failed
        ],
        failed_deliveries=[
            replace(delivery, error=redact(delivery.study_id, delivery.error)) for delivery in deliveries
        ],
        draft_gate=draft_gate_counts(session),
        outbox=outbox_summary(session),
        model=served_model(session),
        activity=activity(session, now),
        quality_by_model=aggregate(scores),
        quality_by_week=aggregate(scores, by_week=True),
    )


def state_times(
    session: Session, *, study_ids: Iterable[int] | None = None, since: datetime | None = None
) -> dict[int, dict[StudyState, datetime]]:
    """Per study, when it last moved to "inferred" and to "delivered" (either may be missing)."""
    query = (
        select(StudyEvent.study_id, StudyEvent.to_state, func.max(StudyEvent.at))
        .where(StudyEvent.to_state.in_((StudyState.INFERRED, StudyState.DELIVERED)))
        .group_by(StudyEvent.study_id, StudyEvent.to_state)
    )
    if study_ids is not None:
        query = query.where(StudyEvent.study_id.in_(list(study_ids)))
    if since is not None:
        query = query.where(StudyEvent.at >= since)
    found: dict[int, dict[StudyState, datetime]] = defaultdict(dict)
    for study_id, state, at in session.execute(query):
        found[study_id][state] = at
    return found


def failed_deliveries(session: Session, limit: int) -> list[FailedDelivery]:
    """The messages that need an operator (failed, or held against their frozen identity), newest first."""
    query = (
        select(Delivery, Report.study_id)
        .join(Report, Report.id == Delivery.report_id)
        .where(Delivery.status.in_((DeliveryStatus.FAILED, DeliveryStatus.HELD)))
        .order_by(Delivery.updated_at.desc(), Delivery.id.desc())
        .limit(limit)
    )
    return [
        FailedDelivery(
            row.id,
            study_id,
            row.kind,
            row.target,
            row.status,
            row.attempts,
            row.updated_at,
            row.last_error or row.ack_text or "no error recorded",
        )
        for row, study_id in session.execute(query)
    ]


def served_model(session: Session) -> ServedModel | None:
    """Read only: unlike `registry.current_version`, it never registers ECHO_MODEL_DIR."""
    row = serving_version(session) or active_version(session)
    if row is None:
        return None
    reports = session.scalar(select(func.count(Report.id)).where(Report.model_version_id == row.id)) or 0
    return ServedModel(
        row.id,
        row.name,
        row.version,
        row.role,
        row.block_size,
        row.parent_id,
        row.created_at,
        row.promoted_at,
        reports,
        row.gate,
    )


def activity(session: Session, now: datetime) -> Activity:
    since = now - ACTIVITY_WINDOW
    first_hour = since.replace(minute=0, second=0, microsecond=0)
    hours = [first_hour + timedelta(hours=n) for n in range(int((now - first_hour) / timedelta(hours=1)) + 1)]
    drafts = [0] * len(hours)
    failures = [0] * len(hours)
    for (created_at,) in session.execute(select(Report.created_at).where(Report.created_at >= since)):
        drafts[_hour_index(first_hour, created_at, len(hours))] += 1
    failed_at = select(StudyEvent.at).where(StudyEvent.to_state == StudyState.FAILED, StudyEvent.at >= since)
    for (at,) in session.execute(failed_at):
        failures[_hour_index(first_hour, at, len(hours))] += 1
    received = dict(
        session.execute(
            select(Study.id, Study.last_received_at).where(
                Study.id.in_(select(StudyEvent.study_id).where(StudyEvent.at >= since))
            )
        ).all()
    )
    latency = []
    for study_id, moves in state_times(session, since=since).items():
        drafted = moves.get(StudyState.INFERRED)
        if drafted is None or study_id not in received:
            continue
        to_draft = _seconds(received[study_id], drafted)
        if to_draft is not None:
            latency.append(
                LatencyPoint(drafted, to_draft, _seconds(received[study_id], moves.get(StudyState.DELIVERED)))
            )
    latency.sort(key=lambda point: point.drafted_at)
    return Activity(since, latency, hours, drafts, failures)


class Redactor:
    """Replaces, in free text about a study, the identifiers the database holds for it (patient id,
    accession number, Study Instance UID): the node's own reasons carry none, but a RIS's error
    text may echo them."""

    def __init__(self, identifiers: dict[int, list[str]]):
        self._identifiers = identifiers

    @classmethod
    def for_studies(cls, session: Session, study_ids: Iterable[int]) -> Redactor:
        ids = sorted(set(study_ids))
        query = select(Study.id, Study.patient_id, Study.accession_number, Study.study_instance_uid).where(
            Study.id.in_(ids)
        )
        found = {
            study_id: [value for value in values if value and value.strip()]
            for study_id, *values in session.execute(query)
        }
        return cls(found)

    def __call__(self, study_id: int, text: str) -> str:
        # Longest first: a UID that contains a shorter identifier is replaced whole.
        for value in sorted(self._identifiers.get(study_id, []), key=len, reverse=True):
            text = text.replace(value.strip(), REDACTED)
        return text


def _study_line(row: StudyRow, moves: dict[StudyState, datetime], redact: Redactor) -> StudyLine:
    drafted = moves.get(StudyState.INFERRED)
    delivered = moves.get(StudyState.DELIVERED)
    if delivered is not None and drafted is not None and delivered < drafted:
        delivered = None  # an earlier draft's delivery; the newest draft is not delivered yet
    return StudyLine(
        row.id,
        row.state,
        row.modality,
        row.instances,
        row.first_received_at,
        row.last_received_at,
        drafted,
        delivered,
        redact(row.id, _note(row)),
    )


def _note(row: StudyRow) -> str:
    """Why the study is where it is; the identity conflict only when its reason does not say it already."""
    reason = row.failure_reason or (row.skip_reason if row.state is StudyState.SKIPPED else None) or ""
    conflict = row.identity_conflict or ""
    return "; ".join(part for part in (reason, conflict if conflict not in reason else "") if part)


def _seconds(start: datetime, end: datetime | None) -> float | None:
    if end is None:
        return None
    return max((end - start).total_seconds(), 0.0)


def _median(values: list[float]) -> float | None:
    return median(values) if values else None


def _hour_index(first_hour: datetime, moment: datetime, hours: int) -> int:
    return min(max(int((moment - first_hour) / timedelta(hours=1)), 0), hours - 1)
