"""Header values made fit for the report, with a note for each value repaired, truncated or dropped.

One malformed optional value (a birth date "19xx0101", a sex "Male", a study time "25:61", an
issuer longer than HL7's 20 characters) must never lose a report. Two functions, one per message,
each returning the cleaned value and the notes the outbox puts in the delivery's note:

- `sanitize_source(dataset)` for the SR: a copy of the image header (no pixel data) in which every
  value that its VR does not allow is repaired (a date with separators, a time with colons, a code
  in lower case, a name with a backslash or too many components), truncated (descriptions and names
  longer than their VR's maximum) or dropped (left empty: what cannot be repaired).
- `sanitize_study_info(info)` for the ORU: birth date and sex repaired or dropped, descriptive
  fields truncated to the HL7 v2.5.1 component lengths (PID-3.4 assigning authority 20, XPN family
  name 50, given and middle names 30, prefix and suffix 20, OBR-4 text 199), unusable optional
  order numbers and procedure codes dropped.

Identifiers are never truncated: a shortened accession number or patient id could name another
order or patient. The patient id and its issuer (in DICOM), UIDs and codes are never altered; an
optional identifier the message cannot carry (an accession number longer than DICOM's 16
characters, an order number with a line break) is dropped instead, and a required one the message
cannot carry makes the builder refuse with a ValueError naming it. `build_sr` and `build_oru` call
these themselves, so they never fail over such a value; call them first to get the notes.

Notes name the attribute and the rule, never the value (values are identifiers; notes are logged).
"""

from __future__ import annotations

import copy
import dataclasses
from datetime import datetime

from pydicom import Dataset
from pydicom.datadict import dictionary_VM, keyword_for_tag
from pydicom.dataelem import DataElement
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence as DicomSequence

from exporters.dicom_values import CHECKED_VRS, TEXT_VRS, Fix, check_value, truncate
from exporters.hl7_escape import escape_text
from exporters.identity import StudyInfo

# Never altered, even when not valid for their VR: they say whose images these are, and the SR
# must carry exactly what the images carry. (UIDs are never checked at all.)
UNALTERED_KEYWORDS = frozenset(
    {
        "PatientID",
        "IssuerOfPatientID",
        "CodeValue",
        "CodingSchemeDesignator",
        "CodingSchemeVersion",
        "LongCodeValue",
        "URNCodeValue",
        "SpecificCharacterSet",
    }
)
# Identifiers a report can do without: dropped (left empty) rather than altered when invalid.
OPTIONAL_IDENTIFIERS = frozenset(
    {
        "AccessionNumber",
        "StudyID",
        "RequestedProcedureID",
        "ScheduledProcedureStepID",
        "PerformedProcedureStepID",
        "PlacerOrderNumberImagingServiceRequest",
        "FillerOrderNumberImagingServiceRequest",
        "AdmissionID",
        "OtherPatientIDs",
        "LocalNamespaceEntityID",
        "UniversalEntityID",
    }
)
_SEX_CODES = {"M": "M", "MALE": "M", "F": "F", "FEMALE": "F", "O": "O", "OTHER": "O"}
_SEX_UNKNOWN = {"U", "UNKNOWN", "UNK"}
_PIXEL_GROUP = 0x7FE0

# HL7 v2.5.1 component lengths (chapter 2A) for what sanitize_study_info may truncate.
HD_NAMESPACE_LENGTH = 20  # PID-3.4 assigning authority, HD.1 (IS)
CE_TEXT_LENGTH = 199  # OBR-4.2, CE.2 (ST)
IDENTIFIER_LENGTH = 199  # the most hl7apy lets an ST component carry (EI.1 in v2.5.1)
# DICOM PN order (family, given, middle, prefix, suffix) with the XPN component each becomes.
_XPN_COMPONENTS = (
    ("family name (XPN.1)", 50),
    ("given name (XPN.2)", 30),
    ("middle name (XPN.3)", 30),
    ("prefix (XPN.5)", 20),
    ("suffix (XPN.4)", 20),
)


# --- the SR's source header ---------------------------------------------------------------------


def sanitize_source(dataset: Dataset) -> tuple[Dataset, list[str]]:
    """A copy of `dataset` without pixel data whose values all fit their VR, and what was changed.

    The caller's dataset is not modified. File meta information is copied as it is.
    """
    if not isinstance(dataset, Dataset):
        raise TypeError(f"dataset must be a pydicom Dataset, got {type(dataset).__name__}")
    notes: list[str] = []
    clean = _clean_dataset(dataset, "", notes, top_level=True)
    if getattr(dataset, "file_meta", None) is not None:
        clean.file_meta = copy.deepcopy(dataset.file_meta)
    return clean, notes


def _clean_dataset(dataset: Dataset, prefix: str, notes: list[str], *, top_level: bool) -> Dataset:
    clean = Dataset()
    for tag in list(dataset.keys()):
        if top_level and tag.group == _PIXEL_GROUP:
            continue
        name = prefix + (keyword_for_tag(tag) or str(tag))
        try:
            element = dataset[tag]
        except Exception:  # noqa: BLE001 - a value pydicom cannot even decode: leave it out
            notes.append(f"{name}: cannot be decoded; left out")
            continue
        if element.VR == "SQ":
            items = [
                _clean_dataset(item, f"{name}[{index}].", notes, top_level=False)
                for index, item in enumerate(element.value or [])
            ]
            clean.add(DataElement(tag, "SQ", DicomSequence(items)))
        elif tag.is_private or element.VR not in CHECKED_VRS or element.keyword in UNALTERED_KEYWORDS:
            clean.add(copy.deepcopy(element))
        else:
            clean.add(_clean_element(element, name, notes))
    return clean


def _clean_element(element: DataElement, name: str, notes: list[str]) -> DataElement:
    texts = original = _texts(element)
    if texts is None:  # undecoded bytes: nothing to check them against
        return copy.deepcopy(element)
    identifier = element.keyword in OPTIONAL_IDENTIFIERS
    if len(texts) > 1 and _single_valued(element):
        if identifier or element.VR not in TEXT_VRS:
            notes.append(f"{name}: {len(texts)} values where DICOM allows 1; dropped")
            return _element(element, [])
        notes.append(
            f"{name}: {len(texts)} values where DICOM allows 1 (a backslash in the text); joined with spaces"
        )
        texts = [" ".join(texts)]
    kept: list[str] = []
    for text in texts:
        fix = _sex_fix(text) if element.keyword == "PatientSex" else check_value(element.VR, text)
        if fix is None:
            kept.append(text)
            continue
        if identifier and fix.value is not None:
            fix = Fix(None, f"{fix.problem} (an identifier is never altered)")
        notes.append(fix.note(name))
        if fix.value is not None:
            kept.append(fix.value)
    return copy.deepcopy(element) if kept == original else _element(element, kept)


def _texts(element: DataElement) -> list[str] | None:
    value = element.value
    if value is None or value == "":
        return []
    values = list(value) if isinstance(value, MultiValue | list | tuple) else [value]
    if any(isinstance(item, bytes | bytearray) for item in values):
        return None
    return [str(item) for item in values]


def _single_valued(element: DataElement) -> bool:
    try:
        return dictionary_VM(element.tag) == "1"
    except KeyError:
        return False


def _element(element: DataElement, texts: list[str]) -> DataElement:
    """A new element with `texts` as its value: empty when none are left (Type 2 stays present)."""
    value: str | list[str] = texts[0] if len(texts) == 1 else (texts or "")
    return DataElement(element.tag, element.VR, value)


def _sex_fix(text: str) -> Fix | None:
    """Patient's Sex is M, F, O or empty (PS3.3 C.7.1.1); a word for one of them is repaired."""
    stripped = text.strip()
    if stripped in ("", "M", "F", "O"):
        return None
    word = stripped.upper()
    if word in _SEX_CODES:
        return Fix(_SEX_CODES[word], "not one of the codes M, F or O", "rewritten as the code")
    if word in _SEX_UNKNOWN:
        return Fix(None, "unknown is written as an empty value")
    return Fix(None, "not one of the codes M, F or O")


# --- the ORU's study information ----------------------------------------------------------------


def sanitize_study_info(info: StudyInfo) -> tuple[StudyInfo, list[str]]:
    """`info` with what an ORU cannot carry repaired, truncated or dropped, and what was changed.

    Required identifiers (patient id, accession number, study UID) are left as they are: if the
    ORU cannot carry one, `build_oru` refuses with a ValueError naming it.
    """
    if not isinstance(info, StudyInfo):
        raise TypeError(f"study must be a StudyInfo, got {type(info).__name__}")
    _check_types(info)
    notes: list[str] = []
    changes: dict[str, object] = {}

    birth_date = (info.birth_date or "").strip()
    fix = check_value("DA", birth_date)
    if fix is not None:
        notes.append(fix.note("PID-7 birth date"))
        changes["birth_date"] = fix.value or ""
    elif birth_date != info.birth_date:
        changes["birth_date"] = birth_date

    sex = (info.sex or "").strip()
    if sex.upper() in _SEX_UNKNOWN:
        changes["sex"] = ""  # PID-8 U: HL7 has a code for unknown, nothing to note
    elif (fix := _sex_fix(sex)) is not None:
        notes.append(fix.note("PID-8 sex") + ("" if fix.value else " (sent as U, unknown)"))
        changes["sex"] = fix.value or ""
    elif sex != info.sex:
        changes["sex"] = sex

    name = _oru_person_name(info.patient_name or "", notes)
    if name != (info.patient_name or ""):
        changes["patient_name"] = name

    if info.patient_id_issuer is not None:
        issuer = _oneline(info.patient_id_issuer, "PID-3.4 assigning authority (issuer of patient id)", notes)
        issuer = _fit(issuer, HD_NAMESPACE_LENGTH, "PID-3.4 assigning authority (HD.1)", notes)
        if issuer != info.patient_id_issuer:
            changes["patient_id_issuer"] = issuer or None

    for argument, field_name in (
        ("placer_order_number", "ORC-2/OBR-2 placer order number"),
        ("filler_order_number", "ORC-3/OBR-3 filler order number"),
    ):
        value = getattr(info, argument)
        if value and not _carriable(value):
            notes.append(
                f"{field_name}: {_why_not_carriable(value)}; dropped (an identifier is never altered)"
            )
            changes[argument] = None

    if info.procedure_code and not (
        _carriable(info.procedure_code) and _carriable(info.procedure_coding_scheme or "L")
    ):
        notes.append(
            "OBR-4 procedure code: "
            f"{_why_not_carriable(info.procedure_code + (info.procedure_coding_scheme or ''))}; "
            "dropped with its coding scheme (a code is never altered), the procedure text kept"
        )
        changes["procedure_code"] = changes["procedure_coding_scheme"] = None
    if info.procedure_description:
        text = _oneline(info.procedure_description, "OBR-4 procedure text", notes)
        text = _fit(text, CE_TEXT_LENGTH, "OBR-4 procedure text (CE.2)", notes)
        if text != info.procedure_description:
            changes["procedure_description"] = text or None

    if info.observation_datetime is None:
        notes.append("OBR-7 observation time: the header has no valid study or acquisition date; left empty")
    return (dataclasses.replace(info, **changes) if changes else info), notes


def _check_types(info: StudyInfo) -> None:
    for field in dataclasses.fields(info):
        value = getattr(info, field.name)
        if field.name == "observation_datetime":
            if value is not None and not isinstance(value, datetime):
                raise TypeError(f"study.observation_datetime must be a datetime, got {type(value).__name__}")
        elif value is not None and not isinstance(value, str):
            raise TypeError(f"study.{field.name} must be a string, got {type(value).__name__}")


def _oru_person_name(dicom_name: str, notes: list[str]) -> str:
    """The name with its alphabetic group fit for PID-5 (XPN); the other groups are not sent."""
    alphabetic, *other_groups = dicom_name.split("=")
    alphabetic = _oneline(alphabetic, "PID-5 patient name", notes)
    components = alphabetic.split("^")
    if len(components) > 5:
        components = [*components[:4], " ".join(part for part in components[4:] if part)]
        notes.append("PID-5 patient name: more than 5 name components; the extra ones joined to the fifth")
    components = [
        _fit(part, limit, f"PID-5 {what}", notes)
        for part, (what, limit) in zip(components, _XPN_COMPONENTS, strict=False)
    ]
    return "=".join(["^".join(components), *other_groups])


def _oneline(text: str, what: str, notes: list[str]) -> str:
    """Descriptive text without line breaks or control characters (HL7 fields are one line)."""
    clean = "".join(" " if ord(char) < 0x20 or ord(char) == 0x7F else char for char in text)
    if clean != text:
        notes.append(f"{what}: control characters; replaced with spaces")
    return clean.strip()


def _fit(text: str, limit: int, what: str, notes: list[str]) -> str:
    """`text` cut so that its escaped form (what goes on the wire) has at most `limit` characters."""
    if len(escape_text(text)) <= limit:
        return text
    cut = truncate(text, limit)
    while len(escape_text(cut)) > limit:
        cut = cut[:-1].rstrip()
    notes.append(f"{what}: longer than the {limit} characters HL7 v2.5.1 allows; truncated to {limit}")
    return cut


def _carriable(value: str) -> bool:
    return not any(ord(char) < 0x20 or ord(char) == 0x7F for char in value) and (
        len(escape_text(value.strip())) <= IDENTIFIER_LENGTH
    )


def _why_not_carriable(value: str) -> str:
    if any(ord(char) < 0x20 or ord(char) == 0x7F for char in value):
        return "contains a line break or control character"
    return f"longer than the {IDENTIFIER_LENGTH} characters an HL7 component can carry"
