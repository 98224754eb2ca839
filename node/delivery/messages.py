"""A stored report as the messages the outbox sends: the SRs for the PACS (the narrative TID 2000
SR and the IHE AI Results TID 1500 SR, as ECHO_SR_TEMPLATES asks), the ORU for the RIS.

Both are rebuilt from the database and the spool on every attempt, with the identifiers fixed
when the report was stored (SR SOP Instance UID, HL7 control id) and the report's own time: a
resend carries the same identifiers and text, so a PACS replaces the instance it already has and
a RIS can recognise a duplicate.

A report that supersedes another (`reports.supersedes_id`: the study was drafted again from its
frontal view, see `node.store.redraft`) has delivery rows of its own, with a new SR SOP Instance
UID and a new HL7 control id, and its messages are corrected preliminaries: the SR names the
superseded report's SR in its Predecessor Documents Sequence, the ORU carries OBR-25 / OBX-11 C.
Each does so when the superseded report's message of that kind may have reached its destination
(delivered, or tried at least once); a message that never left needs no correction, and its
replacement goes out as a plain draft.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import TYPE_CHECKING

from pydicom import Dataset
from pydicom.uid import Comprehensive3DSRStorage, ComprehensiveSRStorage, generate_uid

from exporters.air_sr import build_air_sr
from exporters.identity import ModelIdentity, study_info_from_dataset
from exporters.oru import build_oru, encode_er7, new_control_id
from exporters.readings import draft_readings
from exporters.sanitize import sanitize_source, sanitize_study_info
from exporters.sr import PreviousSR, build_sr
from node.config.demo_model import is_demo_model_version
from node.config.settings import Settings
from node.store.models import Delivery, ModelVersion
from node.store.states import DeliveryKind, DeliveryStatus

if TYPE_CHECKING:  # fhir.resources loads with the first FHIR report: a node without ECHO_FHIR never needs it
    from fhir.resources.R4B.bundle import Bundle

MANUFACTURER = "ECHO Project"
DEMO_NOTICE = "DEMO MODEL (synthetic data only): not for clinical use."
_SERIES_NAMESPACE = uuid.UUID("0b0f6a47-2f1e-4a55-8d8c-5c1b7f0e3a91")


def destinations(settings: Settings) -> dict[DeliveryKind, str]:
    """Where a report goes, each only when set: the SRs of ECHO_SR_TEMPLATES to ECHO_PACS, the ORU to
    ECHO_RIS, the FHIR DiagnosticReport to ECHO_FHIR (a server's base URL or a folder)."""
    wanted: dict[DeliveryKind, str] = {}
    if settings.pacs is not None:
        for template, kind in (("2000", DeliveryKind.SR), ("1500", DeliveryKind.AIR)):
            if template in settings.sr_templates:
                wanted[kind] = str(settings.pacs)
    if settings.ris is not None:
        wanted[DeliveryKind.ORU] = str(settings.ris)
    if settings.fhir is not None:
        wanted[DeliveryKind.FHIR] = settings.fhir
    return wanted


def is_sr(kind: DeliveryKind) -> bool:
    """An SR for the PACS (narrative or AI Results): sent by C-STORE, identified by its instance UID."""
    return kind in (DeliveryKind.SR, DeliveryKind.AIR)


def new_message_id(kind: DeliveryKind) -> str:
    """The identifier a message keeps across attempts: an SR's SOP Instance UID, an ORU's control id,
    a DiagnosticReport bundle's id."""
    if is_sr(kind):
        return generate_uid()
    return new_control_id() if kind is DeliveryKind.ORU else str(uuid.uuid4())


def new_delivery(report_id: int, kind: DeliveryKind, target: str, now: datetime) -> Delivery:
    """A pending outbox row, due now, with its message identifier (`new_message_id`) fixed here,
    once: every later attempt and resend carries the same one."""
    return Delivery(
        report_id=report_id,
        kind=kind,
        target=target,
        message_id=new_message_id(kind),
        status=DeliveryStatus.PENDING,
        attempts=0,
        next_attempt_at=now,
        created_at=now,
        updated_at=now,
    )


def may_have_reached(row: Delivery | None) -> bool:
    """Whether a delivery row's message may be at its destination: delivered, or sent at least once."""
    return row is not None and (row.status is DeliveryStatus.DELIVERED or row.attempts > 0)


def previous_sr(row: Delivery | None, study_instance_uid: str) -> PreviousSR | None:
    """The superseded report's SR (its SR delivery `row`) as a corrected SR's predecessor; None when that
    SR never left the node."""
    if row is None or not may_have_reached(row):
        return None
    sop_class = Comprehensive3DSRStorage if row.kind is DeliveryKind.AIR else ComprehensiveSRStorage
    return PreviousSR(study_instance_uid, sr_series_uid(row.message_id), row.message_id, sop_class)


def result_status(previous_oru: Delivery | None) -> str:
    """OBR-25 / OBX-11 for a report: C (corrected draft) when the draft it supersedes had an ORU that
    may have reached the RIS, else P."""
    return "C" if may_have_reached(previous_oru) else "P"


def model_identity(model: ModelVersion, decoding: str | None = None) -> ModelIdentity:
    """The model (and the decoding, from `reports.decoding`) the messages name as the draft's author."""
    return ModelIdentity(
        name=model.name, version=model.version, manufacturer=MANUFACTURER, decoding=decoding or None
    )


def sr_series_uid(sop_instance_uid: str) -> str:
    """The SR's series, a pure function of its instance UID, so a resend lands in the same series."""
    return f"2.25.{uuid.uuid5(_SERIES_NAMESPACE, sop_instance_uid).int}"


def header_repairs(kind: DeliveryKind, source: Dataset) -> list[str]:
    """What the builder will repair, truncate or drop in `source` for this message (never the values)."""
    if is_sr(kind):
        return sanitize_source(source)[1]
    return sanitize_study_info(study_info_from_dataset(source))[1]


def with_demo_notice(impression: str, model: ModelIdentity) -> str:
    """The impression as sent: led by a notice when the bundled synthetic-data demo model wrote it."""
    return f"{DEMO_NOTICE}\n{impression}" if is_demo_model_version(model.version) else impression


def report_sr(
    source: Dataset,
    findings: str,
    impression: str,
    model: ModelIdentity,
    sop_instance_uid: str,
    corrects: PreviousSR | None = None,
) -> Dataset:
    return build_sr(
        [source],
        findings,
        with_demo_notice(impression, model),
        model,
        series_instance_uid=sr_series_uid(sop_instance_uid),
        sop_instance_uid=sop_instance_uid,
        corrects=corrects,
    )


def report_air_sr(
    source: Dataset,
    findings: str,
    impression: str,
    model: ModelIdentity,
    sop_instance_uid: str,
    corrects: PreviousSR | None = None,
) -> Dataset:
    """The draft's findings as coded statements (IHE AI Results, TID 1500), in a series of its own."""
    return build_air_sr(
        [source],
        draft_readings(findings, impression),
        model,
        series_instance_uid=sr_series_uid(sop_instance_uid),
        sop_instance_uid=sop_instance_uid,
        corrects=corrects,
    )


def report_pacs_sr(
    kind: DeliveryKind,
    source: Dataset,
    item_text: tuple[str, str],
    model: ModelIdentity,
    sop_instance_uid: str,
    corrects: PreviousSR | None = None,
) -> Dataset:
    """The SR of `kind` (narrative or AI Results) for one draft (`item_text`: findings, impression)."""
    build = report_sr if kind is DeliveryKind.SR else report_air_sr
    return build(source, *item_text, model, sop_instance_uid, corrects)


def report_fhir(
    source: Dataset, findings: str, impression: str, model: ModelIdentity, drafted_at: datetime
) -> Bundle:
    """The draft as a FHIR transaction: its DiagnosticReport (one per study: a resend or a corrected
    draft updates it), the coded findings as Observations, the model as its Device and Provenance."""
    from exporters.fhir import build_diagnostic_report

    info, _repairs = sanitize_study_info(study_info_from_dataset(source))
    return build_diagnostic_report(
        info,
        findings,
        with_demo_notice(impression, model),
        draft_readings(findings, impression),
        model,
        issued=drafted_at,
    )


def report_oru(
    source: Dataset,
    findings: str,
    impression: str,
    model: ModelIdentity,
    control_id: str,
    drafted_at: datetime,  # MSH-7 and OBR-22: the report's own time
    settings: Settings,
    status: str = "P",  # OBR-25 / OBX-11: see `result_status`
) -> bytes:
    message = build_oru(
        study_info_from_dataset(source),
        findings,
        with_demo_notice(impression, model),
        model,
        control_id=control_id,
        sending_app=settings.hl7_sending_application,
        sending_facility=settings.hl7_sending_facility,
        receiving_app=settings.hl7_receiving_application,
        receiving_facility=settings.hl7_receiving_facility,
        now=drafted_at,
        result_status=status,
    )
    return encode_er7(message)
