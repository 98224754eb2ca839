"""`echo-node demo`: the bundled synthetic study, sent to a running node, and the report it drafts.

The study goes in the way a PACS sends one (C-STORE, pynetdicom SCU), with new UIDs and a new
accession number each run, so every run is a new study. The answer is read from the node's own
database, through the same Settings the node uses: the demo runs on the node's machine, the
database is where the node records every step (the admin CLI reads it too), and no extra status
port has to be opened and secured for it. The C-STORE is answered only after the node committed
the study, so a study that is then not in the database means the demo reads another node's
settings, which is reported as such.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pydicom import Dataset, dcmread
from pydicom.uid import generate_uid
from pynetdicom import AE
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from node.store.models import Delivery, ModelVersion, Report, Study, StudyEvent
from node.store.states import DeliveryStatus, StudyState

DEMO_STUDY = Path(__file__).resolve().parents[2] / "echo" / "assets" / "demo" / "chest-pa.dcm"
DEMO_CALLING_AE = "ECHODEMO"
FIND_STUDY_SECONDS = 5.0  # the row is committed before the C-STORE answer; allow for a slow disk


class DemoError(RuntimeError):
    """Why the demo could not show a report; one line for the operator."""


@dataclass(frozen=True)
class DeliveryLine:
    kind: str
    target: str
    status: DeliveryStatus
    attempts: int
    ack_code: str | None
    last_error: str | None


@dataclass(frozen=True)
class DemoReport:
    findings: str
    impression: str
    model_name: str
    model_version: str
    tokens: int
    forwards: int
    seconds: float
    timings: dict[str, float]
    view_reason: str | None
    decoding: str | None = None  # "onestep", "multistep steps=8 tau=0.85 by teacher ...": who wrote it
    gate: str | None = None  # the draft gate's decision: "passed" or "redecoded"


@dataclass(frozen=True)
class DemoOutcome:
    state: StudyState
    reason: str | None  # the newest study event's reason
    report: DemoReport | None
    deliveries: list[DeliveryLine] = field(default_factory=list)
    enqueued: bool = False  # the node handed the inference task to the broker

    @property
    def settled(self) -> bool:
        """Nothing more will happen without an operator (or the deliveries' next tries)."""
        if self.state in (StudyState.DELIVERED, StudyState.FAILED, StudyState.SKIPPED):
            return True
        return (
            self.state is StudyState.INFERRED
            and self.report is not None
            and all(
                line.status in (DeliveryStatus.DELIVERED, DeliveryStatus.FAILED) for line in self.deliveries
            )
        )


def fresh_demo_copy(path: Path = DEMO_STUDY) -> Dataset:
    """The demo image with new study, series and instance UIDs and a new accession number."""
    try:
        dataset = dcmread(path)
    except FileNotFoundError:
        raise DemoError(f"the demo study {path} is missing: run scripts/make_demo_study.py") from None
    dataset.StudyInstanceUID = generate_uid()
    dataset.SeriesInstanceUID = generate_uid()
    dataset.SOPInstanceUID = generate_uid()
    dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    dataset.AccessionNumber = f"DEMO{secrets.randbelow(10**10):010d}"
    return dataset


def send_study(
    dataset: Dataset, host: str, port: int, *, called_ae: str, calling_ae: str, timeout: float
) -> None:
    """C-STORE `dataset` to the node; raises DemoError unless the node answered success."""
    ae = AE(ae_title=calling_ae)
    ae.connection_timeout = ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    ae.add_requested_context(dataset.SOPClassUID, [str(dataset.file_meta.TransferSyntaxUID)])
    where = f"{called_ae}@{host}:{port}"
    association = ae.associate(host, port, ae_title=called_ae)
    if association.is_rejected:
        raise DemoError(
            f"the node at {where} rejected the association: is the calling AE {calling_ae} in "
            "ECHO_ALLOWED_CALLERS (or pass --calling-ae), and is the node's AE title right (--called-ae)?"
        )
    if not association.is_established:
        raise DemoError(f"no DICOM node answers at {where}: is `echo-node serve` running there?")
    try:
        response = association.send_c_store(dataset)
    finally:
        if association.is_established:
            association.release()
    if "Status" not in response:
        raise DemoError(f"the node at {where} did not answer the C-STORE within {timeout:g} s")
    if int(response.Status) != 0x0000:
        comment = response.get("ErrorComment")
        raise DemoError(
            f"the node at {where} refused the study: C-STORE status 0x{int(response.Status):04X}"
            + (f" ({comment})" if comment else "")
        )


def read_outcome(session: Session, study_uid: str) -> DemoOutcome | None:
    """The study's state, its newest report and that report's deliveries; None if it is unknown."""
    study = session.scalars(select(Study).where(Study.study_instance_uid == study_uid)).first()
    if study is None:
        return None
    reason = session.scalars(
        select(StudyEvent.reason)
        .where(StudyEvent.study_id == study.id)
        .order_by(StudyEvent.id.desc())
        .limit(1)
    ).first()
    found = session.execute(
        select(Report, ModelVersion)
        .join(ModelVersion, Report.model_version_id == ModelVersion.id)
        .where(Report.study_id == study.id)
        .order_by(Report.id.desc())
        .limit(1)
    ).first()
    enqueued = study.enqueued_at is not None
    if found is None:
        return DemoOutcome(study.state, reason, None, enqueued=enqueued)
    report, model = found
    deliveries = [
        DeliveryLine(
            row.kind.value.upper(), row.target, row.status, row.attempts, row.ack_code, row.last_error
        )
        for row in session.scalars(
            select(Delivery).where(Delivery.report_id == report.id).order_by(Delivery.id)
        )
    ]
    return DemoOutcome(
        study.state,
        reason,
        DemoReport(
            findings=report.findings,
            impression=report.impression,
            model_name=model.name,
            model_version=model.version,
            tokens=report.tokens,
            forwards=report.forwards,
            seconds=report.seconds,
            timings=dict(report.timings or {}),
            view_reason=report.view_reason,
            decoding=report.decoding,
            gate=report.gate,
        ),
        deliveries,
        enqueued,
    )


def wait_for_outcome(
    sessions: sessionmaker[Session],
    study_uid: str,
    timeout: float,
    *,
    poll_seconds: float = 0.25,
    on_poll: Callable[[DemoOutcome | None], None] = lambda outcome: None,
) -> DemoOutcome:
    """Poll the database until the study is settled or `timeout` passes; raises DemoError when no
    report came (a report whose deliveries are still being retried is returned as it is)."""
    started = time.monotonic()
    deadline = started + timeout
    outcome: DemoOutcome | None = None
    while True:
        with sessions() as session:
            outcome = read_outcome(session, study_uid)
        on_poll(outcome)
        now = time.monotonic()
        if outcome is None and now - started > min(FIND_STUDY_SECONDS, timeout):
            raise DemoError(
                "the node stored the study but it is not in the database this demo reads: "
                "run the demo with the node's settings (--config or the same ECHO_* variables)"
            )
        if outcome is not None and outcome.settled:
            break
        if now >= deadline:
            break
        time.sleep(poll_seconds)
    assert outcome is not None
    if outcome.report is None:
        if outcome.state in (StudyState.FAILED, StudyState.SKIPPED):
            raise DemoError(
                f"the node did not draft a report: the study is {outcome.state} ({outcome.reason})"
            )
        if outcome.state is StudyState.QUEUED and not outcome.enqueued:
            raise DemoError(
                f"no report within {timeout:g} s: the node has not handed the study to its broker yet; "
                "is the broker (ECHO_BROKER_URL) up? The node's log and `echo-admin status` say"
            )
        raise DemoError(
            f"no report within {timeout:g} s: the study is {outcome.state}; is a worker running "
            "(`echo-admin status` shows the queues)?"
        )
    return outcome
