"""`echo-admin study ID`: everything the node knows about one study, without who the patient is.

Instances (how many, which views and SOP classes; series UIDs hashed), inference attempts, drafts
and the model that wrote each, deliveries with their last error and ACK, and the timeline of
state changes with their reasons. No patient name, id or birth date, no raw header values, no
draft text: the PACS and the RIS show those to the people entitled to see them.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from node.store.models import Delivery, Instance, Job, ModelVersion, Report, Study, StudyEvent
from node.store.states import DeliveryKind, DeliveryStatus, JobKind, JobState, StudyState


@dataclass(frozen=True)
class InstanceLine:
    id: int
    series_uid: str
    sop_class: str  # its name when pydicom knows it
    view_position: str | None
    size: int
    received_at: datetime


@dataclass(frozen=True)
class JobLine:
    id: int
    kind: JobKind
    attempt: int
    state: JobState
    worker: str | None  # host:pid
    started_at: datetime
    ended_at: datetime | None
    error: str | None


@dataclass(frozen=True)
class ReportLine:
    id: int
    model_name: str
    model_version: str
    tokens: int
    seconds: float
    created_at: datetime


@dataclass(frozen=True)
class DeliveryLine:
    id: int
    report_id: int
    kind: DeliveryKind
    target: str
    status: DeliveryStatus
    attempts: int
    next_attempt_at: datetime | None
    last_error: str | None
    ack_code: str | None
    ack_text: str | None


@dataclass(frozen=True)
class EventLine:
    at: datetime
    from_state: StudyState | None
    to_state: StudyState
    reason: str | None


@dataclass
class StudyDetail:
    id: int
    study_instance_uid: str
    accession_number: str | None
    modality: str | None
    body_part: str | None
    state: StudyState
    skip_reason: str | None
    identity_conflict: str | None
    first_received_at: datetime
    last_received_at: datetime
    enqueued_at: datetime | None
    updated_at: datetime
    instances: list[InstanceLine] = field(default_factory=list)
    jobs: list[JobLine] = field(default_factory=list)
    reports: list[ReportLine] = field(default_factory=list)
    deliveries: list[DeliveryLine] = field(default_factory=list)
    events: list[EventLine] = field(default_factory=list)

    @property
    def failure_reason(self) -> str | None:
        """Why the study failed: the reason of its newest move to failed (None unless failed)."""
        if self.state is not StudyState.FAILED:
            return None
        return next((e.reason for e in reversed(self.events) if e.to_state is StudyState.FAILED), None)

    @property
    def views(self) -> Counter[str]:
        return Counter(line.view_position or "unknown" for line in self.instances)


def sop_class_name(uid: str) -> str:
    from pydicom.uid import UID  # pydicom's dictionaries: not for every echo-admin command

    name = UID(uid).name
    return name if name and name != uid else uid


def study_detail(session: Session, study: Study) -> StudyDetail:
    detail = StudyDetail(
        study.id,
        study.study_instance_uid,
        study.accession_number,
        study.modality,
        study.body_part,
        study.state,
        study.skip_reason,
        study.identity_conflict,
        study.first_received_at,
        study.last_received_at,
        study.enqueued_at,
        study.updated_at,
    )
    detail.instances = [
        InstanceLine(
            row.id,
            row.series_instance_uid,
            sop_class_name(row.sop_class_uid),
            row.view_position,
            row.size,
            row.received_at,
        )
        for row in session.scalars(
            select(Instance).where(Instance.study_id == study.id).order_by(Instance.id)
        )
    ]
    detail.jobs = [
        JobLine(
            row.id,
            row.kind,
            row.attempt,
            row.state,
            f"{row.worker_host}:{row.worker_pid}" if row.worker_host else None,
            row.started_at,
            row.ended_at,
            row.error,
        )
        for row in session.scalars(select(Job).where(Job.study_id == study.id).order_by(Job.id))
    ]
    reports = session.execute(
        select(Report, ModelVersion)
        .join(ModelVersion, Report.model_version_id == ModelVersion.id)
        .where(Report.study_id == study.id)
        .order_by(Report.id)
    ).all()
    detail.reports = [
        ReportLine(report.id, model.name, model.version, report.tokens, report.seconds, report.created_at)
        for report, model in reports
    ]
    report_ids = [report.id for report, _ in reports]
    if report_ids:
        detail.deliveries = [
            DeliveryLine(
                row.id,
                row.report_id,
                row.kind,
                row.target,
                row.status,
                row.attempts,
                row.next_attempt_at,
                row.last_error,
                row.ack_code,
                row.ack_text,
            )
            for row in session.scalars(
                select(Delivery).where(Delivery.report_id.in_(report_ids)).order_by(Delivery.id)
            )
        ]
    detail.events = [
        EventLine(row.at, row.from_state, row.to_state, row.reason)
        for row in session.scalars(
            select(StudyEvent).where(StudyEvent.study_id == study.id).order_by(StudyEvent.id)
        )
    ]
    return detail
