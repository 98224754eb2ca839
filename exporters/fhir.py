"""The draft report as a FHIR R4 transaction Bundle, built and validated by fhir.resources.

Three entries, each a conditional update (PUT ``Type?search``: create, or replace the one match):

- ``Device``: the model build (name, version, manufacturer), identified by the device UID the SR's
  device observer and the ORU's OBX-18 carry (``urn:dicom:uid`` / ``urn:oid:``). Every report of a
  build shares it, so the draft's decoding is not on it but on the Provenance and Observations.
- ``DiagnosticReport``: status preliminary; code LOINC 18748-4 "Diagnostic imaging study" (the
  document code the SR's title uses; 36643-5 "XR Chest 2 Views" would claim two views, and a draft
  may come from one); conclusion = the impression; presentedForm = the whole text (text/plain,
  UTF-8, base64, with its language); imagingStudy -> the study by its UID; identifiers: this node's
  own (``node_system`` | Study Instance UID) and the accession (type ACSN); basedOn -> the order by
  its placer / filler numbers; result -> one contained ``Observation`` per coded finding
  (`exporters.fhir_findings`, which says why they are contained).
- ``Provenance``: the report was authored by the Device (agent type "author"), the decoding in the
  activity's text. R4 allows no Device as DiagnosticReport.performer (Practitioner,
  PractitionerRole, Organization, CareTeam only); Provenance is where FHIR names the software that
  wrote a resource, as HL7's AI transparency guidance does, and the report and Provenance carry
  the security label AIAST "artificial intelligence asserted".

The patient is referenced by identifier only (patient ID typed MR, the issuer as assigner): a
reporting node must not create patients in the receiving system, and nothing else about the
patient is sent.

Idempotent delivery: conditional updates keyed on business identifiers rather than ids derived from
the study UID, because a client-chosen id needs update-as-create, which R4 leaves to the server
(CapabilityStatement.rest.resource.updateCreate) and which sites often switch off, while conditional
update is the R4 interaction for "create, or replace the one that matches". The key is this node's own
identifier system, never the accession alone: the radiologist's signed report may carry the same
accession, and a draft must never replace it. A resend, or a later draft of the same study,
therefore updates the same three resources.

Models are fhir.resources' R4B ones (fhir.resources 8 ships R5, R4B and STU3; R4B differs from R4
in none of these resources). fhir.resources checks structure, types and cardinality, not value
sets or reference target types: the builder keeps those right itself.
"""

from __future__ import annotations

import base64
import re
import uuid
from collections.abc import Sequence
from datetime import date, datetime, tzinfo
from urllib.parse import quote

from fhir.resources.R4B.attachment import Attachment
from fhir.resources.R4B.bundle import Bundle, BundleEntry, BundleEntryRequest
from fhir.resources.R4B.codeableconcept import CodeableConcept
from fhir.resources.R4B.coding import Coding
from fhir.resources.R4B.device import Device, DeviceDeviceName, DeviceVersion
from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from fhir.resources.R4B.identifier import Identifier
from fhir.resources.R4B.meta import Meta
from fhir.resources.R4B.provenance import Provenance, ProvenanceAgent
from fhir.resources.R4B.reference import Reference

from exporters.fhir_findings import LOINC, concept, observation, validated
from exporters.fhir_findings import SNOMED_CT as SNOMED_CT  # importable from here, as before
from exporters.identity import ModelIdentity, StudyInfo, is_valid_uid
from exporters.readings import FindingReading, check_readings
from exporters.text import check_sections

__all__ = ["DEFAULT_NODE_SYSTEM", "DRAFT_STATUSES", "REPORT_CODE", "build_diagnostic_report", "report_key"]

DICOM_UID = "urn:dicom:uid"
_V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"  # identifier types
_V2_0074 = "http://terminology.hl7.org/CodeSystem/v2-0074"  # diagnostic service sections
_PARTICIPANT_TYPE = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"

REPORT_CODE = Coding(system=LOINC, code="18748-4", display="Diagnostic imaging study")
AI_ASSERTED = Coding(
    system="http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
    code="AIAST",
    display="Artificial Intelligence asserted",
)
# This node's identifier system for its drafts when the site names none: an OID under the
# UUID-derived arc 2.25, so it is a valid, globally unique URI without registering anything.
DEFAULT_NODE_SYSTEM = f"urn:oid:2.25.{uuid.uuid5(uuid.NAMESPACE_URL, 'echo-node:draft-report').int}"
# A model's draft is never final; "partial" is FHIR's parent of "preliminary".
DRAFT_STATUSES = ("preliminary", "partial")

_LANGUAGE = re.compile(r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*$")  # BCP 47, as FHIR's `code` needs
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:\S+$")
_KEY_NAMESPACE = uuid.UUID("0f6d3c52-7b1e-4c55-9a4e-2f7d9b1c8e01")


def report_key(node_system: str, study_instance_uid: str) -> uuid.UUID:
    """The draft report's stable UUID: its fullUrl in the Bundle and the name `write_fhir` gives it.

    A function of this node's identifier system and the study only, so a resend and a superseding
    draft carry the same key, and nothing of the patient is in it.
    """
    return uuid.uuid5(_KEY_NAMESPACE, f"{node_system}\x00{study_instance_uid}")


def build_diagnostic_report(
    info: StudyInfo,
    findings: str,
    impression: str,
    readings: Sequence[FindingReading],
    model: ModelIdentity,
    *,
    issued: datetime,
    status: str = "preliminary",
    node_system: str = DEFAULT_NODE_SYSTEM,
    language: str = "en",
    study_timezone: tzinfo | None = None,
) -> Bundle:
    """The transaction Bundle for one draft; raises ValueError or TypeError naming the argument.

    `issued` is when the draft was made, timezone-aware. The study's time (`info.observation_
    datetime`, read from the DICOM header without a zone) becomes `effectiveDateTime` in
    `study_timezone` when given, else its date alone: FHIR requires a zone on any time of day.
    `node_system` is the URI of this node's identifiers for its drafts (one report per study).
    """
    findings_lines, impression_lines = check_sections(findings, impression)
    _check_arguments(info, model, issued, status, node_system, language, study_timezone)
    check_readings(readings)
    study_uid = info.study_instance_uid
    key = report_key(node_system, study_uid)
    report_url = f"urn:uuid:{key}"
    device_url = f"urn:uuid:{uuid.uuid5(key, 'device')}"
    device = _device(model)
    patient = _patient_reference(info)
    effective = _effective(info.observation_datetime, study_timezone)
    contained = [
        observation(reading, status, patient, effective, issued, model, device_url) for reading in readings
    ]
    report_identifier = Identifier(use="official", system=node_system, value=study_uid)
    report = validated(
        DiagnosticReport,
        "the DiagnosticReport",
        meta=Meta(security=[AI_ASSERTED]),
        contained=contained or None,
        identifier=[report_identifier, *_accession(info)],
        basedOn=_orders(info) or None,
        status=status,
        category=[
            concept(
                Coding(system=LOINC, code="LP29684-5", display="Radiology"),
                Coding(system=_V2_0074, code="RAD", display="Radiology"),
            )
        ],
        code=concept(REPORT_CODE),
        subject=patient,
        effectiveDateTime=effective,
        issued=issued,
        imagingStudy=[
            Reference(
                type="ImagingStudy", identifier=Identifier(system=DICOM_UID, value=f"urn:oid:{study_uid}")
            )
        ],
        result=[Reference(reference=f"#{item.id}", type="Observation") for item in contained] or None,
        conclusion="\n".join(impression_lines) or None,
        presentedForm=[_presented_form(findings_lines, impression_lines, language, issued)],
    )
    provenance = validated(
        Provenance,
        "the Provenance",
        meta=Meta(tag=[Coding(system=node_system, code=study_uid)], security=[AI_ASSERTED]),
        target=[Reference(reference=report_url, type="DiagnosticReport")],
        recorded=issued,
        activity=CodeableConcept(
            text=f"drafted by {model.label}" + (f", decoding: {model.decoding}" if model.decoding else "")
        ),
        agent=[
            ProvenanceAgent(
                type=concept(Coding(system=_PARTICIPANT_TYPE, code="author", display="Author")),
                who=Reference(reference=device_url, type="Device", display=model.label),
            )
        ],
    )
    entries = [
        _put(device_url, device, _search("Device", device.identifier[0])),
        _put(report_url, report, _search("DiagnosticReport", report_identifier)),
        # Provenance has no identifier in R4: its tag (this node's system, the study) is the key.
        _put(
            f"urn:uuid:{uuid.uuid5(key, 'provenance')}",
            provenance,
            _search("Provenance", report_identifier, parameter="_tag"),
        ),
    ]
    return validated(Bundle, "the Bundle", type="transaction", entry=entries)


def _check_arguments(
    info: StudyInfo,
    model: ModelIdentity,
    issued: datetime,
    status: str,
    node_system: str,
    language: str,
    study_timezone: tzinfo | None,
) -> None:
    if not isinstance(info, StudyInfo):
        raise TypeError(f"info must be a StudyInfo, got {type(info).__name__}")
    if not isinstance(model, ModelIdentity):
        raise TypeError(f"model must be a ModelIdentity, got {type(model).__name__}")
    if not is_valid_uid(info.study_instance_uid):
        raise ValueError(
            "info.study_instance_uid is missing or not a valid DICOM UID: the report has no study"
        )
    if not isinstance(info.patient_id, str) or not info.patient_id.strip():
        raise ValueError("info.patient_id is empty: the report cannot name its patient")
    if not isinstance(issued, datetime) or issued.utcoffset() is None:
        raise ValueError(f"issued must be a timezone-aware datetime, got {issued!r}")
    if status not in DRAFT_STATUSES:
        raise ValueError(
            f"status must be one of {', '.join(DRAFT_STATUSES)} for a model draft, got {status!r}"
        )
    if not isinstance(node_system, str) or not _URI.match(node_system) or "|" in node_system:
        raise ValueError(f"node_system must be an absolute URI without '|', got {node_system!r}")
    if not isinstance(language, str) or not _LANGUAGE.match(language):
        raise ValueError(f"language must be a BCP 47 tag such as 'en' or 'en-GB', got {language!r}")
    if study_timezone is not None and not isinstance(study_timezone, tzinfo):
        raise TypeError(f"study_timezone must be a tzinfo or None, got {type(study_timezone).__name__}")


def _put(full_url: str, resource, condition: str) -> BundleEntry:
    return BundleEntry(
        fullUrl=full_url, resource=resource, request=BundleEntryRequest(method="PUT", url=condition)
    )


def _search(resource_type: str, identifier: Identifier, parameter: str = "identifier") -> str:
    """A conditional URL matching `identifier` (system|value, percent-encoded as a query value)."""
    return f"{resource_type}?{parameter}={quote(f'{identifier.system}|{identifier.value}', safe=':/|')}"


def _device(model: ModelIdentity) -> Device:
    """The model build: the same UID, name and version the SR's device observer carries."""
    return validated(
        Device,
        "the Device",
        identifier=[Identifier(system=DICOM_UID, value=f"urn:oid:{model.uid}")],
        manufacturer=model.manufacturer,
        deviceName=[DeviceDeviceName(name=model.name, type="model-name")],
        version=[DeviceVersion(value=model.version)],
    )


def _patient_reference(info: StudyInfo) -> Reference:
    """The patient by identifier only: the patient ID, typed MR, its issuer as assigner (and as
    the system when the issuer is an OID, the one issuer form that is a URI)."""
    issuer = (info.patient_id_issuer or "").strip() or None
    identifier = Identifier(
        type=concept(Coding(system=_V2_0203, code="MR", display="Medical record number")),
        system=f"urn:oid:{issuer}" if issuer and is_valid_uid(issuer) else None,
        value=info.patient_id.strip(),
        assigner=Reference(display=issuer) if issuer else None,
    )
    return Reference(type="Patient", identifier=identifier)


def _accession(info: StudyInfo) -> list[Identifier]:
    accession = (info.accession_number or "").strip()
    if not accession:
        return []
    return [
        Identifier(
            use="usual",
            type=concept(Coding(system=_V2_0203, code="ACSN", display="Accession ID")),
            value=accession,
        )
    ]


def _orders(info: StudyInfo) -> list[Reference]:
    """The imaging order by its placer and filler numbers (v2-0203 PLAC / FILL), where known."""
    orders = []
    for number, code, display in (
        (info.placer_order_number, "PLAC", "Placer Identifier"),
        (info.filler_order_number, "FILL", "Filler Identifier"),
    ):
        if number and number.strip():
            identifier = Identifier(
                type=concept(Coding(system=_V2_0203, code=code, display=display)), value=number.strip()
            )
            orders.append(Reference(type="ServiceRequest", identifier=identifier))
    return orders


def _effective(observed: datetime | None, study_timezone: tzinfo | None) -> datetime | date | None:
    if observed is None:
        return None
    if observed.utcoffset() is not None:
        return observed
    if study_timezone is not None:
        return observed.replace(tzinfo=study_timezone)
    return observed.date()


def _presented_form(
    findings: list[str], impression: list[str], language: str, issued: datetime
) -> Attachment:
    """The whole draft as the radiologist would read it, sections headed as in `echo.report`."""
    sections = [
        (heading, lines) for heading, lines in (("FINDINGS", findings), ("IMPRESSION", impression)) if lines
    ]
    text = "\n\n".join(f"{heading}:\n" + "\n".join(lines) for heading, lines in sections) + "\n"
    return Attachment(
        contentType="text/plain; charset=utf-8",
        language=language,
        data=base64.b64encode(text.encode("utf-8")),
        title="Preliminary report drafted by a model, not signed",
        creation=issued,
    )
