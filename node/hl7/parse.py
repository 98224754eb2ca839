"""A signed report read from an inbound ORU^R01 or MDM^T02 (ER7), with hl7apy.

`read_message(payload, admits)` decodes the frame's bytes, reads the MSH (a small tolerant reader,
so that even a message hl7apy cannot parse is answered about the right control id), checks the
header and the sending facility, then parses the message with hl7apy and reads:

- ORU^R01: the first OBR and the OBX segments after it. Result status OBR-25, or, when OBR-25 is
  empty, the text OBXs' OBX-11: F (final) or C (corrected); anything else is refused.
- MDM^T02: TXA-17 document completion status AU (authenticated) or LA (legally authenticated) is
  final; the text is in the OBX segments.
- Accession number: OBR-18, then OBR-3 (filler order number; TXA-15 in an MDM without OBR). A
  value longer than 16 characters is not a DICOM accession number and is passed over.
- Study Instance UID: an HD/ST OBX coded 113014 "DICOM Study" (DCM), as the node's own ORU carries
  it (`exporters.oru.STUDY_OBSERVATION`), else ZDS-1.
- Text: TX/FT/ST OBXs. Lines coded 59776-5 (findings) or 19005-8 / IMP (impression), as the node's
  own ORU lays them out, go to their section; other lines are one blob cut at its headings
  (`node.hl7.sections`). FT formatting (\\.br\\, \\.sp\\) becomes line breaks.

Whatever is wrong is a `Refusal` (see `node.hl7.ack` for AE and AR); nothing else escapes.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import hl7apy
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message

from exporters.hl7_escape import DEFAULT_ENCODING, EncodingCharacters, unescape_text
from exporters.oru import FINDINGS_OBSERVATION, IMPRESSION_OBSERVATION, STUDY_OBSERVATION
from node.hl7.ack import AckCode, Condition, Header, Refusal
from node.hl7.fields import Fields, hl7_timestamp
from node.hl7.sections import split_sections
from node.learning.signed import SignedReportIn
from node.store.states import SignedSource

SUPPORTED = {"ORU": ("R01",), "MDM": ("T02",)}
FINAL_RESULT_STATUSES = ("F", "C")
FINAL_DOCUMENT_STATUSES = ("AU", "LA")  # TXA-17: authenticated, legally authenticated
TEXT_TYPES = ("TX", "FT", "ST")
FINDINGS_CODES = {FINDINGS_OBSERVATION.split("^")[0]}
IMPRESSION_CODES = {IMPRESSION_OBSERVATION.split("^")[0], "IMP"}
STUDY_CODE = STUDY_OBSERVATION.split("^")[0]
ACCESSION_LENGTH = 16  # DICOM SH, and the signed_reports column
FACILITY_LENGTH = 64
CONTROL_ID_LENGTH = 95  # message_key is facility|control id, 160 characters

_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
_CHARSETS = {"UNICODE UTF-8": "utf-8", "8859/1": "latin-1", "8859/15": "iso8859-15", "ASCII": "ascii"}


@dataclass(frozen=True)
class Reading:
    """What a frame held: its header (None when it has no readable MSH) and the report, or why not."""

    header: Header | None
    report: SignedReportIn | None = None
    refusal: Refusal | None = None


def read_message(payload: bytes, admits: Callable[[str], bool] = lambda facility: True) -> Reading:
    """Read one frame's payload; `admits(facility)` says whether MSH-4 may send signed reports."""
    header = None
    try:
        text = _decode(payload)
        header, encoding = read_header(text)
        check_header(header)
        if not admits(header.sending_facility):
            raise Refusal(
                AckCode.REJECT,
                Condition.UNKNOWN_KEY_IDENTIFIER,
                f"sending facility {header.sending_facility or '(empty)'!r} (MSH-4) is not allowed "
                "to send signed reports to this node",
            )
        return Reading(header, report=read_report(text, header, encoding))
    except Refusal as refusal:
        if header is None:  # say which message it was, if the MSH can be read at all
            with contextlib.suppress(Refusal):
                header, _ = read_header(payload.decode("latin-1"))
        return Reading(header, refusal=refusal)


def _decode(payload: bytes) -> str:
    first = payload.lstrip().split(b"\r", 1)[0].split(b"\n", 1)[0]
    fields = first[4:].split(first[3:4]) if first.startswith(b"MSH") and len(first) > 4 else []
    declared = fields[16].split(b"~")[0].decode("ascii", "replace").strip() if len(fields) > 16 else ""
    charset = _CHARSETS.get(declared.upper(), "utf-8")
    try:
        return payload.decode(charset)
    except UnicodeDecodeError:
        raise Refusal(
            AckCode.ERROR,
            Condition.DATA_TYPE_ERROR,
            f"the message is not valid {charset} text (MSH-18 {declared or 'empty: UTF-8 assumed'})",
        ) from None


def _segments(text: str) -> list[str]:
    return [segment for segment in re.split(r"\r\n|\r|\n", text.strip()) if segment.strip()]


def read_header(text: str) -> tuple[Header, EncodingCharacters]:
    """The MSH, read without hl7apy; a Refusal (AE) when the text does not start with one."""
    segments = _segments(text)
    msh = segments[0] if segments else ""
    if not msh.startswith("MSH") or len(msh) < 8 or msh[3].isalnum() or msh[3].isspace():
        raise Refusal(AckCode.ERROR, Condition.SEGMENT_SEQUENCE_ERROR, "not an HL7 message: no MSH segment")
    separator = msh[3]
    fields = msh.split(separator)  # fields[n - 1] is MSH-n for n >= 2
    declared = fields[1]
    encoding = EncodingCharacters(
        separator,
        *(declared[i] if i < len(declared) else DEFAULT_ENCODING[i + 1] for i in range(4)),
    )

    def value(number: int, component: int = 1) -> str:
        raw = fields[number - 1] if number - 1 < len(fields) else ""
        parts = raw.split(encoding.repetition)[0].split(encoding.component)
        return unescape_text(parts[component - 1], encoding).strip() if component <= len(parts) else ""

    header = Header(
        sending_application=value(3),
        sending_facility=value(4) or value(4, 2),
        receiving_application=value(5),
        receiving_facility=value(6),
        control_id=value(10),
        processing_id=value(11).upper(),
        version=value(12),
        message_code=value(9).upper(),
        trigger=value(9, 2).upper(),
    )
    return header, encoding


def check_header(header: Header) -> None:
    """Refuse (AR) what this listener does not take, before reading the message's body."""
    if not header.control_id:
        raise _reject(Condition.REQUIRED_FIELD_MISSING, "MSH-10 (message control id) is empty")
    if header.message_code not in SUPPORTED:
        raise _reject(
            Condition.UNSUPPORTED_MESSAGE_TYPE,
            f"message type {header.message_type} is not accepted: signed reports come as ORU^R01 or MDM^T02",
        )
    if header.trigger not in SUPPORTED[header.message_code]:
        raise _reject(
            Condition.UNSUPPORTED_EVENT_CODE,
            f"message type {header.message_type} is not accepted: signed reports come as ORU^R01 or MDM^T02",
        )
    if header.processing_id not in ("", "P"):
        raise _reject(
            Condition.UNSUPPORTED_PROCESSING_ID,
            f"processing id {header.processing_id} (MSH-11) is not accepted: only P (production) reports "
            "are kept for the site's learning loop",
        )
    if header.version and header.version not in hl7apy.SUPPORTED_LIBRARIES:
        raise _reject(
            Condition.UNSUPPORTED_VERSION_ID, f"HL7 version {header.version} (MSH-12) is not supported"
        )
    if len(header.sending_facility) > FACILITY_LENGTH:
        raise _reject(Condition.DATA_TYPE_ERROR, f"MSH-4 is longer than {FACILITY_LENGTH} characters")
    if len(header.control_id) > CONTROL_ID_LENGTH:
        raise _reject(Condition.DATA_TYPE_ERROR, f"MSH-10 is longer than {CONTROL_ID_LENGTH} characters")


def _reject(condition: Condition, reason: str) -> Refusal:
    return Refusal(AckCode.REJECT, condition, reason)


def read_report(text: str, header: Header, encoding: EncodingCharacters) -> SignedReportIn:
    try:
        message = parse_message(
            "\r".join(_segments(text)), validation_level=VALIDATION_LEVEL.TOLERANT, find_groups=False
        )
        segments = list(message.children)
    except Exception as error:  # hl7apy raises its own errors and, on some garbage, Python's
        detail = " ".join(str(error).split())[:120]
        raise Refusal(
            AckCode.ERROR,
            Condition.SEGMENT_SEQUENCE_ERROR,
            f"cannot parse the message ({type(error).__name__}{': ' + detail if detail else ''})",
        ) from None
    fields = Fields(encoding)
    if header.message_code == "ORU":
        return _read_oru(segments, header, fields, text)
    return _read_mdm(segments, header, fields, text)


def _read_oru(segments: list[Any], header: Header, fields: Fields, text: str) -> SignedReportIn:
    names = [segment.name for segment in segments]
    if "OBR" not in names:
        raise _reject(Condition.REQUIRED_FIELD_MISSING, "no OBR segment: the report names no order")
    start = names.index("OBR")
    obr = segments[start]
    end = names.index("OBR", start + 1) if "OBR" in names[start + 1 :] else len(segments)
    observations = [segment for segment in segments[start + 1 : end] if segment.name == "OBX"]
    text_observations = [obx for obx in observations if fields.value(obx, 2).upper() in TEXT_TYPES]
    status, status_field = fields.value(obr, 25).upper(), "OBR-25"
    if not status:
        statuses = {fields.value(obx, 11).upper() for obx in text_observations}
        status_field = "OBX-11"
        if statuses and statuses <= set(FINAL_RESULT_STATUSES):
            status = "C" if "C" in statuses else "F"
        else:
            status = "/".join(sorted(statuses - set(FINAL_RESULT_STATUSES))) or ""
    if status not in FINAL_RESULT_STATUSES:
        raise Refusal(
            AckCode.REJECT,
            Condition.TABLE_VALUE_NOT_FOUND,
            f"result status {status or '(empty)'} ({status_field}) is not final: only F (final) and "
            "C (corrected) signed reports are taken",
        )
    accession, accession_field = _accession(
        [(fields.value(obr, 18), "OBR-18"), (fields.value(obr, 3), "OBR-3")]
    )
    study_uid, uid_field = _study_uid(observations, segments, fields)
    findings, impression, report_text, layout = _sections(
        [obx for obx in text_observations if not _is_study(obx, fields)], fields
    )
    signed_at = hl7_timestamp(fields.value(obr, 22))
    parsed = {"result_status_field": status_field, "accession_field": accession_field}
    return _report(
        header, text, findings, impression, report_text, status, accession, study_uid, signed_at,
        {**parsed, "study_uid_field": uid_field, "sections": layout},
    )  # fmt: skip


def _read_mdm(segments: list[Any], header: Header, fields: Fields, text: str) -> SignedReportIn:
    by_name: dict[str, Any] = {}
    for segment in segments:
        by_name.setdefault(segment.name, segment)
    txa = by_name.get("TXA")
    if txa is None:
        raise _reject(Condition.REQUIRED_FIELD_MISSING, "no TXA segment: an MDM^T02 needs one")
    status = fields.value(txa, 17).upper()
    if status not in FINAL_DOCUMENT_STATUSES:
        raise Refusal(
            AckCode.REJECT,
            Condition.TABLE_VALUE_NOT_FOUND,
            f"document completion status {status or '(empty)'} (TXA-17) is not final: only AU "
            "(authenticated) and LA (legally authenticated) documents are taken",
        )
    obr = by_name.get("OBR")
    candidates = [(fields.value(txa, 15), "TXA-15")]
    if obr is not None:
        candidates = [(fields.value(obr, 18), "OBR-18"), (fields.value(obr, 3), "OBR-3"), *candidates]
    accession, accession_field = _accession(candidates)
    observations = [segment for segment in segments if segment.name == "OBX"]
    study_uid, uid_field = _study_uid(observations, segments, fields)
    text_observations = [
        obx
        for obx in observations
        if fields.value(obx, 2).upper() in TEXT_TYPES and not _is_study(obx, fields)
    ]
    findings, impression, report_text, layout = _sections(text_observations, fields)
    signed_at = hl7_timestamp(fields.value(txa, 22, 15)) or hl7_timestamp(fields.value(txa, 4))
    parsed = {"document_status": status, "accession_field": accession_field, "study_uid_field": uid_field}
    return _report(
        header, text, findings, impression, report_text, "F", accession, study_uid, signed_at,
        {**parsed, "sections": layout},
    )  # fmt: skip


def _accession(candidates: list[tuple[str, str]]) -> tuple[str | None, str | None]:
    for value, field in candidates:
        if value and len(value) <= ACCESSION_LENGTH and value.isprintable():
            return value, field
    return None, None


def _is_study(obx: Any, fields: Fields) -> bool:
    code, name = fields.value(obx, 3).upper(), fields.value(obx, 3, 2).upper()
    return fields.value(obx, 2).upper() in ("HD", "ST") and (
        code == STUDY_CODE or "STUDY INSTANCE UID" in name
    )


def _study_uid(observations: list[Any], segments: list[Any], fields: Fields) -> tuple[str | None, str | None]:
    candidates = [(fields.value(obx, 5), "OBX-5") for obx in observations if _is_study(obx, fields)]
    candidates += [(fields.value(segment, 1), "ZDS-1") for segment in segments if segment.name == "ZDS"]
    for value, field in candidates:
        if _UID.match(value) and len(value) <= 64:
            return value, field
    return None, None


def _sections(observations: list[Any], fields: Fields) -> tuple[str, str, str, str]:
    """(findings, impression, the whole text, how it was laid out: coded / headings)."""
    coded: dict[str, list[str]] = {"findings": [], "impression": []}
    blob: list[str] = []
    every: list[str] = []
    for obx in observations:
        code = fields.value(obx, 3).upper()
        lines = fields.text_lines(obx, 5)
        every += lines
        if code in FINDINGS_CODES:
            coded["findings"] += lines
        elif code in IMPRESSION_CODES:
            coded["impression"] += lines
        else:
            blob += lines
    findings = "\n".join(line.strip() for line in coded["findings"] if line.strip())
    impression = "\n".join(line.strip() for line in coded["impression"] if line.strip())
    blob_findings, blob_impression = split_sections("\n".join(blob))
    layout = "coded" if findings or impression else "headings"
    return findings or blob_findings, impression or blob_impression, "\n".join(every).strip(), layout


def _report(
    header: Header,
    text: str,
    findings: str,
    impression: str,
    report_text: str,
    status: str,
    accession: str | None,
    study_uid: str | None,
    signed_at: datetime | None,
    parsed: dict[str, Any],
) -> SignedReportIn:
    if not (accession or study_uid):
        raise _reject(
            Condition.REQUIRED_FIELD_MISSING,
            "no accession number (OBR-18, OBR-3) and no Study Instance UID (OBX 113014, ZDS-1): the "
            "report cannot be matched to a study",
        )
    if not (findings.strip() or impression.strip()):
        raise _reject(Condition.REQUIRED_FIELD_MISSING, "no report text (OBX of type TX, FT or ST)")
    return SignedReportIn(
        source=SignedSource.HL7,
        message_key=f"{header.sending_facility}|{header.control_id}",
        message_type=header.message_type,
        findings=findings,
        impression=impression,
        text=report_text,
        result_status=status,
        accession_number=accession,
        study_instance_uid=study_uid,
        sending_facility=header.sending_facility or None,
        signed_at=signed_at,
        raw=text,
        parsed={"control_id": header.control_id, "version": header.version, **parsed},
    )
