"""One claimed outbox row and what its message is built from, and what a send attempt came to.

`source_header` is the safety check before anything is built: the frozen identity of the draft,
held for an operator when the study's instances disagree on the patient or the spool's copy of the
source image now names another patient, order or study.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydicom import Dataset, dcmread
from pydicom.errors import InvalidDicomError
from sqlalchemy import select
from sqlalchemy.orm import Session

from echo.errors import one_line
from exporters.identity import ModelIdentity
from exporters.outcome import SendStatus
from exporters.sr import PreviousSR
from node.delivery.identity import IdentityError, compare_with_spool, thawed_header
from node.delivery.messages import is_sr, model_identity, previous_sr, result_status
from node.delivery.supersede import superseded_rows
from node.store.models import Delivery, Instance, ModelVersion, Report, Study
from node.store.states import DeliveryKind


@dataclass(frozen=True)
class Work:
    """A claimed row and what its message is built from, read in one go (no session held open)."""

    delivery_id: int
    kind: DeliveryKind
    target: str
    message_id: str
    attempts: int
    report_id: int
    findings: str
    impression: str
    drafted_at: datetime
    model: ModelIdentity
    created_at: datetime  # the row's: the retry horizon counts from here
    identity: dict[str, Any] | None  # frozen at inference: what the messages are built from
    source_path: str | None  # the spool file, read only to check it still agrees
    identity_conflict: str | None  # the study's instances disagree on the patient: never sent
    corrects: PreviousSR | None = None  # an SR's predecessor: the superseded report's SR of its kind
    result_status: str = "P"  # an ORU's OBR-25 / OBX-11: C when it corrects an earlier draft's ORU


@dataclass(frozen=True)
class SendResult:
    status: SendStatus
    error: str | None = None
    ack_code: str | None = None
    ack_text: str | None = None
    repairs: tuple[str, ...] = ()  # header values the builder repaired or dropped: kept in the row's note


class NotBuilt(Exception):
    """The message could not be built; `result` says whether that is permanent."""

    def __init__(self, result: SendResult) -> None:
        super().__init__(result.error)
        self.result = result


class Held(Exception):
    """The message must not go out until an operator looks; the text says why (no identifiers)."""


def row_note(result: SendResult) -> str | None:
    """The peer's answer text, then what the builder repaired in the header (so an operator sees it)."""
    parts = [result.ack_text] if result.ack_text else []
    if result.repairs:
        parts.append("header repaired: " + "; ".join(result.repairs))
    return "; ".join(parts) or None


def not_built(what: str, error: Exception) -> str:
    """A builder's refusal (ValueError/TypeError: its own clear words) or any other error, in one line."""
    text = str(error) if isinstance(error, ValueError | TypeError) and str(error) else one_line(error)
    return f"cannot build the {what}: {text}"


def source_header(item: Work) -> Dataset:
    """The header the messages are built from: the frozen identity, checked against the spool's copy."""
    if item.identity_conflict:
        raise Held(f"{item.identity_conflict}; held for an operator")
    try:
        header = thawed_header(item.identity)
    except IdentityError as error:
        raise Held(f"{error}; check the study, then resend it") from None
    if item.source_path is None:
        return header  # the image row is gone (purged): the frozen copy is all there is, and enough
    try:
        current = dcmread(item.source_path, stop_before_pixels=True)
    except FileNotFoundError:
        return header  # removed from the spool (retention): nothing can disagree
    except InvalidDicomError:
        raise Held("the spool's copy of the source image is no longer DICOM; held for an operator") from None
    except OSError as error:  # a mount or disk problem: the file may be readable later
        raise NotBuilt(
            SendResult(SendStatus.RETRY, f"cannot read the report's source image: {error.strerror or error}")
        ) from None
    disagreement = compare_with_spool(item.identity or {}, current)
    if disagreement is not None:
        raise Held(str(disagreement))
    return header


@dataclass
class OutboxTick:
    """What one tick did; the counts are of outcomes recorded."""

    delivered: list[int] = field(default_factory=list)
    retrying: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    held: list[int] = field(default_factory=list)  # stopped for an operator (identity no longer agrees)
    # claimed, then stopped before their send (their draft was superseded meanwhile): not sent
    stopped: list[int] = field(default_factory=list)

    @property
    def attempted(self) -> int:
        return len(self.delivered) + len(self.retrying) + len(self.failed) + len(self.held)

    @property
    def settled(self) -> set[int]:
        return {*self.delivered, *self.retrying, *self.failed, *self.held, *self.stopped}


def load_work(session: Session, claimed: list[int]) -> list[Work]:
    """The claimed rows with what their messages are built from, read in one go."""
    rows = session.execute(
        select(Delivery, Report, ModelVersion, Instance.path, Study)
        .join(Report, Delivery.report_id == Report.id)
        .join(ModelVersion, Report.model_version_id == ModelVersion.id)
        .join(Study, Report.study_id == Study.id)
        .outerjoin(Instance, Report.instance_id == Instance.id)
        .where(Delivery.id.in_(claimed))
        .order_by(Delivery.id)
    ).all()
    previous = superseded_rows(session, {report.supersedes_id for _, report, *_ in rows})
    work = []
    for delivery, report, model, path, study in rows:
        before, study_uid = previous.get(report.supersedes_id, ({}, None))
        study_uid = study_uid or study.study_instance_uid
        work.append(
            Work(
                delivery_id=delivery.id,
                kind=delivery.kind,
                target=delivery.target,
                message_id=delivery.message_id,
                attempts=delivery.attempts,
                report_id=report.id,
                findings=report.findings,
                impression=report.impression,
                drafted_at=report.created_at,
                model=model_identity(model, report.decoding),
                created_at=delivery.created_at,
                identity=report.identity,
                source_path=path,
                identity_conflict=study.identity_conflict,
                corrects=previous_sr(before.get(delivery.kind), study_uid) if is_sr(delivery.kind) else None,
                result_status=result_status(before.get(DeliveryKind.ORU)),
            )
        )
    return work
