"""The draft report as an HL7 v2.5.1 ORU^R01 with preliminary status, built and validated by hl7apy.

Segments: MSH, PID, ORC (RE), OBR (OBR-18 accession, OBR-24 RAD, OBR-25 P, or C for a corrected
draft; OBR-7 the study's date and time, left empty when the header has no valid one), then OBX
segments:

- one HD OBX carrying the Study Instance UID (113014 "DICOM Study", DCM), so the RIS can link the
  report to the images as in IHE RAD-28;
- one TX OBX per line of Findings (OBX-3 59776-5 "Procedure findings", LN) and of Impression
  (OBX-3 19005-8 "Impression", LN): the LOINC codes CID 7001 pairs with the SR's section headings;
  OBX-4 numbers the lines within a section, OBX-11 is P (preliminary), C in a corrected draft.

A corrected draft (`result_status="C"`: the study was drafted again from its frontal view after a
draft read from a lateral) carries OBR-25 C and OBX-11 C under a new control id, so the RIS replaces
the earlier draft's result. C here means a corrected *preliminary*: HL7 table 0123 has no code for
that, the text is still an unsigned model draft, and the radiologist's signed report (F) follows.

The model is named on every OBX in OBX-18 Equipment Instance Identifier (EI: "name version" and the
device UID that the SR's device observer also carries): OBX-18 is the field HL7 defines for the
equipment that produced an observation, and being on each OBX it survives any per-line handling.

The study's values go through `exporters.sanitize.sanitize_study_info` first: an invalid birth date
or sex is repaired or dropped, an issuer longer than HD.1's 20 characters is truncated, and so on.
Identifiers are sent whole or refused with a ValueError naming them; no hl7apy exception escapes.
"""

from __future__ import annotations

import re
import secrets
import textwrap
from datetime import UTC, datetime

from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.core import Message, Segment
from hl7apy.exceptions import HL7apyException

from exporters.hl7_escape import escape_text
from exporters.identity import ModelIdentity, StudyInfo
from exporters.sanitize import IDENTIFIER_LENGTH, sanitize_study_info
from exporters.text import check_sections

HL7_VERSION = "2.5.1"
FINDINGS_OBSERVATION = "59776-5^Procedure findings^LN"
IMPRESSION_OBSERVATION = "19005-8^Impression^LN"
STUDY_OBSERVATION = "113014^DICOM Study^DCM"

# hl7apy's strict v2.5.1 validation caps an OBX-5 TX value at 199 characters. Long lines are
# wrapped at word boundaries; 66 raw characters stay within the cap even if every one is escaped
# into three (\F\ and friends), and it is a line length RIS viewers show without scrolling.
OBX_TEXT_WIDTH = 66

_CONTROL_ID = re.compile(r"^[A-Za-z0-9._-]{1,20}$")  # MSH-10 is ST of at most 20 characters
_HD_NAMESPACE = re.compile(r"^[^|^~\\&\x00-\x1f]{1,20}$")  # HD.1 is IS: 20 characters, no delimiters
_SEX = {"M": "M", "F": "F", "O": "O", "": "U"}  # DICOM Patient's Sex -> HL7 table 0001
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")
# OBR-25 / OBX-11: P a draft, C a corrected draft (replaces an earlier draft; still preliminary).
RESULT_STATUSES = ("P", "C")


def new_control_id() -> str:
    """A fresh MSH-10: UTC time to the second plus 32 random bits, 20 characters."""
    return f"{datetime.now(UTC):%y%m%d%H%M%S}{secrets.token_hex(4)}"


def build_oru(
    study: StudyInfo,
    findings: str,
    impression: str,
    model: ModelIdentity,
    *,
    control_id: str,
    sending_app: str,
    sending_facility: str,
    receiving_app: str,
    receiving_facility: str,
    now: datetime,
    result_status: str = "P",
) -> Message:
    """The ORU for one study; raises ValueError or TypeError naming the argument it cannot use.

    `result_status` goes to OBR-25 and every OBX-11: "P" for a draft, "C" for a corrected draft that
    replaces one sent earlier (see the module docstring).

    Invalid optional values are repaired, truncated or dropped first (`sanitize_study_info`; call
    it yourself to get the notes saying what was changed); a report is never refused over one.
    """
    findings_lines, impression_lines = check_sections(findings, impression)
    study = _check_arguments(study, model, control_id, now)
    if result_status not in RESULT_STATUSES:
        raise ValueError(f"result_status must be P (draft) or C (corrected draft), got {result_status!r}")
    applications = {
        "sending_app": sending_app,
        "sending_facility": sending_facility,
        "receiving_app": receiving_app,
        "receiving_facility": receiving_facility,
    }
    for argument, value in applications.items():
        if not isinstance(value, str) or not _HD_NAMESPACE.match(value):
            raise ValueError(f"{argument} must be 1-20 characters without HL7 delimiters, got {value!r}")

    message = Message("ORU_R01", version=HL7_VERSION, validation_level=VALIDATION_LEVEL.STRICT)
    msh = message.msh
    _put(msh, "MSH-3", sending_app, "sending_app")
    _put(msh, "MSH-4", sending_facility, "sending_facility")
    _put(msh, "MSH-5", receiving_app, "receiving_app")
    _put(msh, "MSH-6", receiving_facility, "receiving_facility")
    _put(msh, "MSH-7", _timestamp(now), "now")
    msh.msh_9 = "ORU^R01^ORU_R01"
    _put(msh, "MSH-10", control_id, "control_id")
    msh.msh_11 = "P"
    msh.msh_18 = "UNICODE UTF-8"

    result = message.add_group("ORU_R01_PATIENT_RESULT")
    pid = result.add_group("ORU_R01_PATIENT").add_segment("PID")
    pid.pid_1 = "1"
    _put(pid, "PID-3", _patient_identifier(study), "study.patient_id / study.patient_id_issuer")
    _put(pid, "PID-5", _person_name(study.patient_name), "study.patient_name")
    if study.birth_date:
        _put(pid, "PID-7", study.birth_date, "study.birth_date")
    pid.pid_8 = _SEX[study.sex or ""]

    order = result.add_group("ORU_R01_ORDER_OBSERVATION")
    orc = order.add_segment("ORC")
    orc.orc_1 = "RE"
    obr = order.add_segment("OBR")
    obr.obr_1 = "1"
    if study.placer_order_number:
        placer = _field(study.placer_order_number, "study.placer_order_number")
        _put(orc, "ORC-2", placer, "study.placer_order_number")
        _put(obr, "OBR-2", placer, "study.placer_order_number")
    if study.filler_order_number:
        filler = _field(study.filler_order_number, "study.filler_order_number")
        _put(orc, "ORC-3", filler, "study.filler_order_number")
        _put(obr, "OBR-3", filler, "study.filler_order_number")
    orc.orc_9 = _timestamp(now)
    _put(obr, "OBR-4", _procedure(study), "study.procedure_code / study.procedure_description")
    observed = study.observation_datetime
    if observed is not None:
        _put(obr, "OBR-7", _timestamp(observed), "study.observation_datetime")
    _put(obr, "OBR-18", _field(study.accession_number, "study.accession_number"), "study.accession_number")
    obr.obr_22 = _timestamp(now)
    obr.obr_24 = "RAD"
    obr.obr_25 = result_status

    equipment = f"{escape_text(model.label)}^^{model.uid}^ISO"
    observations = [
        ("HD", STUDY_OBSERVATION, "", _field(study.study_instance_uid, "study.study_instance_uid"))
    ]
    for code, lines in ((FINDINGS_OBSERVATION, findings_lines), (IMPRESSION_OBSERVATION, impression_lines)):
        wrapped = [part for line in lines for part in textwrap.wrap(line, OBX_TEXT_WIDTH)]
        observations += [
            ("TX", code, str(number), escape_text(line)) for number, line in enumerate(wrapped, 1)
        ]
    for set_id, (value_type, code, sub_id, value) in enumerate(observations, 1):
        obx = order.add_group("ORU_R01_OBSERVATION").add_segment("OBX")
        obx.obx_1 = str(set_id)
        obx.obx_2 = value_type
        obx.obx_3 = code
        if sub_id:
            obx.obx_4 = sub_id
        _put(
            obx, "OBX-5", value, "findings / impression" if value_type == "TX" else "study.study_instance_uid"
        )
        obx.obx_11 = result_status
        if observed is not None:
            obx.obx_14 = _timestamp(observed)
        if model.decoding is not None:  # OBX-17 Observation Method: the decoding that wrote the draft
            _put(obx, "OBX-17", f"DECODING^{escape_text(model.decoding)}^99ECHO", "model.decoding")
        _put(obx, "OBX-18", equipment, "model")
        obx.obx_19 = _timestamp(now)

    try:
        message.validate()
    except HL7apyException as error:
        raise ValueError(f"the ORU fails HL7 v{HL7_VERSION} validation ({type(error).__name__})") from error
    return message


def encode_er7(message: Message) -> bytes:
    """The message as sent on the wire: segments ended by CR, UTF-8 as MSH-18 declares."""
    return (message.to_er7() + "\r").encode("utf-8")


def _check_arguments(study: StudyInfo, model: ModelIdentity, control_id: str, now: datetime) -> StudyInfo:
    """Refuse what the ORU cannot carry; returns the study with its optional values made fit."""
    if not isinstance(study, StudyInfo):
        raise TypeError(f"study must be a StudyInfo, got {type(study).__name__}")
    if not isinstance(model, ModelIdentity):
        raise TypeError(f"model must be a ModelIdentity, got {type(model).__name__}")
    if not isinstance(control_id, str) or not _CONTROL_ID.match(control_id):
        raise ValueError(f"control_id must be 1-20 characters of A-Z a-z 0-9 . _ -, got {control_id!r}")
    if not isinstance(now, datetime):
        raise TypeError(f"now must be a datetime, got {type(now).__name__}")
    study, _notes = sanitize_study_info(study)
    required = {
        "study.patient_id": (study.patient_id, "PID-3.1"),
        "study.accession_number": (study.accession_number, "OBR-18"),
        "study.study_instance_uid": (study.study_instance_uid, "OBX-5"),
    }
    for argument, (value, where) in required.items():
        if not value or not value.strip():
            raise ValueError(f"{argument} is required: the RIS matches the report by it")
        escaped = len(escape_text(value.strip()))
        if escaped > IDENTIFIER_LENGTH:
            raise ValueError(
                f"{argument} is {escaped} characters once escaped, more than the {IDENTIFIER_LENGTH} "
                f"{where} can carry; an identifier is never truncated"
            )
    if not (study.procedure_code or study.procedure_description):
        raise ValueError("study.procedure_code or study.procedure_description is required (OBR-4)")
    return study


def _field(value: str, argument: str) -> str:
    """One escaped field value; line breaks are refused because hl7apy would mangle \\.br\\ here."""
    if _CONTROL_CHARACTERS.search(value):
        raise ValueError(f"{argument} contains a line break or control character")
    return escape_text(value.strip())


def _put(segment: Segment, field: str, value: str, argument: str) -> None:
    """Set one field (e.g. "PID-3"); hl7apy's own refusals become a ValueError naming the field.

    hl7apy's message would quote the value, an identifier: only its kind is kept.
    """
    try:
        setattr(segment, field.lower().replace("-", "_"), value)
    except HL7apyException as error:
        raise ValueError(f"{argument} cannot be sent in {field} ({type(error).__name__})") from error


def _timestamp(moment: datetime) -> str:
    """HL7 DTM to the second, with the UTC offset when the datetime carries one."""
    return moment.strftime("%Y%m%d%H%M%S%z")


def _patient_identifier(study: StudyInfo) -> str:
    """PID-3 as CX: id^^^assigning authority^MR (the authority from DICOM Issuer of Patient ID)."""
    issuer = _field(study.patient_id_issuer, "study.patient_id_issuer") if study.patient_id_issuer else ""
    return f"{_field(study.patient_id, 'study.patient_id')}^^^{issuer}^MR"


def _person_name(dicom_name: str) -> str:
    """DICOM PN (family^given^middle^prefix^suffix) as HL7 XPN (family^given^middle^suffix^prefix).

    Only the alphabetic group is sent (before any "=" ideographic/phonetic group). An empty name is
    the HL7 null "" because PID-5 is required.
    """
    alphabetic = (dicom_name or "").split("=")[0]
    family, given, middle, prefix, suffix = ([*alphabetic.split("^"), "", "", "", "", ""])[:5]
    parts = [_field(part, "study.patient_name") for part in (family, given, middle, suffix, prefix)]
    xpn = "^".join(parts).rstrip("^")
    return xpn or '""'


def _procedure(study: StudyInfo) -> str:
    """OBR-4 as CE: code^text^coding system (L, local, when the code comes without a scheme)."""
    if not study.procedure_code:
        return f"^{_field(study.procedure_description or '', 'study.procedure_description')}"
    scheme = study.procedure_coding_scheme or "L"
    text = _field(study.procedure_description or "", "study.procedure_description")
    return "^".join(
        [
            _field(study.procedure_code, "study.procedure_code"),
            text,
            _field(scheme, "study.procedure_coding_scheme"),
        ]
    )
