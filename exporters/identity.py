"""Who wrote the report (the model) and which order it answers (the study), as plain values.

The worker reads both from its own sources (the engine's config, the stored DICOM header) and hands
them to the builders, so the builders stay pure and never touch the database or the filesystem.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import datetime, time

from pydicom import Dataset
from pydicom.multival import MultiValue

from exporters.dicom_values import read_date, read_datetime, read_time

# A fixed namespace makes the device UID a pure function of (name, version): every worker, every
# restart and every site reports the same model build under the same UID, in the SR and in the ORU.
_DEVICE_UID_NAMESPACE = uuid.UUID("5b0e2f6c-3c36-4d53-9a63-9a3f0c1e7d21")
_UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")


def is_valid_uid(value: object) -> bool:
    """A DICOM UID (PS3.5 9.1): dot-separated numbers without leading zeros, at most 64 characters."""
    return isinstance(value, str) and len(value) <= 64 and bool(_UID.match(value))


def derive_device_uid(name: str, version: str) -> str:
    """A DICOM UID for a model build, in the ISO/IEC 9834-8 UUID-derived form ``2.25.<integer>``."""
    build = uuid.uuid5(_DEVICE_UID_NAMESPACE, name + "\x00" + version)
    return f"2.25.{build.int}"


@dataclass(frozen=True)
class ModelIdentity:
    """The model that drafted a report; it is the DEVICE observer in the SR and OBX-18 in the ORU."""

    name: str
    version: str
    manufacturer: str
    device_uid: str | None = None  # None: derived from name + version
    # How the draft was decoded ("onestep", "multistep steps=8 tau=0.85", ...): the SR's Algorithm
    # Parameters item and the ORU's OBX-17. Not part of the device UID: one model, several decodings.
    decoding: str | None = None

    def __post_init__(self) -> None:
        for argument in ("name", "version", "manufacturer"):
            value = getattr(self, argument)
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"ModelIdentity.{argument} must be a non-empty string, got {value!r}")
        if self.decoding is not None and (
            not isinstance(self.decoding, str) or not self.decoding.strip() or len(self.decoding) > 64
        ):
            raise ValueError(f"ModelIdentity.decoding must be 1-64 characters or None, got {self.decoding!r}")
        if self.device_uid is not None and not is_valid_uid(self.device_uid):
            raise ValueError(f"ModelIdentity.device_uid {self.device_uid!r} is not a valid DICOM UID")

    @property
    def uid(self) -> str:
        return self.device_uid or derive_device_uid(self.name, self.version)

    @property
    def label(self) -> str:
        return f"{self.name} {self.version}"


@dataclass(frozen=True, kw_only=True)
class StudyInfo:
    """The patient, order and procedure an ORU reports on; names and dates in DICOM form.

    `patient_name` is a DICOM PN (``Family^Given^Middle^Prefix^Suffix``), `birth_date` a DICOM DA
    (``YYYYMMDD`` or empty), `sex` a DICOM code (M, F, O or empty). `build_oru` checks what an ORU
    needs; `study_info_from_dataset` fills all of it from a stored image header.
    """

    patient_id: str
    patient_name: str
    birth_date: str
    sex: str
    accession_number: str
    study_instance_uid: str
    observation_datetime: datetime | None = None
    placer_order_number: str | None = None
    filler_order_number: str | None = None
    procedure_code: str | None = None
    procedure_coding_scheme: str | None = None
    procedure_description: str | None = None
    patient_id_issuer: str | None = None


def header_text(value: object) -> str | None:
    """A header value as text; several values (a backslash in the file) are joined back with one."""
    if value is None or value == "":
        return None
    if isinstance(value, MultiValue | list | tuple):
        return "\\".join(str(item) for item in value) or None
    return str(value)


def request_attribute(dataset: Dataset, keyword: str) -> str | None:
    """An order attribute from the image header: top level first, then Request Attributes Sequence.

    Modalities put worklist values in either place (the sequence holds one item per requested
    procedure); the first non-empty value wins.
    """
    value = header_text(dataset.get(keyword))
    if value is not None:
        return value
    for item in dataset.get("RequestAttributesSequence") or []:
        value = header_text(item.get(keyword))
        if value is not None:
            return value
    return None


def request_code_item(dataset: Dataset) -> Dataset | None:
    """The coded procedure: Requested Procedure Code Sequence, else Procedure Code Sequence."""
    for holder in [dataset, *(dataset.get("RequestAttributesSequence") or [])]:
        codes = holder.get("RequestedProcedureCodeSequence")
        if codes:
            return codes[0]
    codes = dataset.get("ProcedureCodeSequence")
    return codes[0] if codes else None


# Where the time the images were taken can be read, best first: (date, time) pairs or one DT.
_OBSERVATION_SOURCES = (
    ("StudyDate", "StudyTime"),
    ("AcquisitionDateTime", None),
    ("SeriesDate", "SeriesTime"),
    ("AcquisitionDate", "AcquisitionTime"),
    ("ContentDate", "ContentTime"),
)


def _observation_datetime(dataset: Dataset) -> datetime | None:
    """When the images were taken: the first valid of Study Date/Time, Acquisition DateTime, Series,
    Acquisition or Content Date/Time; a missing or invalid time counts as midnight. None if no date
    in the header is valid: an invalid value is skipped, never an error."""
    for date_keyword, time_keyword in _OBSERVATION_SOURCES:
        text = header_text(dataset.get(date_keyword)) or ""
        if time_keyword is None:
            moment = read_datetime(text)
            if moment is not None:
                return moment
            continue
        day = read_date(text)
        if day is not None:
            at = read_time(header_text(dataset.get(time_keyword)) or "") or time()
            return datetime.combine(day, at)
    return None


def study_info_from_dataset(dataset: Dataset) -> StudyInfo:
    """Read the ORU's patient, order and procedure from one image of the study.

    Values are read as they are (`exporters.sanitize.sanitize_study_info` repairs what an ORU
    cannot carry); only the observation time is judged here, skipping dates that are not valid.
    """
    if not isinstance(dataset, Dataset):
        raise TypeError(f"dataset must be a pydicom Dataset, got {type(dataset).__name__}")
    code = request_code_item(dataset)

    def code_text(keyword: str) -> str | None:
        return header_text(code.get(keyword)) if code is not None else None

    return StudyInfo(
        patient_id=header_text(dataset.get("PatientID")) or "",
        patient_name=header_text(dataset.get("PatientName")) or "",
        birth_date=header_text(dataset.get("PatientBirthDate")) or "",
        sex=header_text(dataset.get("PatientSex")) or "",
        accession_number=header_text(dataset.get("AccessionNumber")) or "",
        study_instance_uid=header_text(dataset.get("StudyInstanceUID")) or "",
        observation_datetime=_observation_datetime(dataset),
        placer_order_number=request_attribute(dataset, "PlacerOrderNumberImagingServiceRequest"),
        filler_order_number=request_attribute(dataset, "FillerOrderNumberImagingServiceRequest"),
        procedure_code=code_text("CodeValue"),
        procedure_coding_scheme=code_text("CodingSchemeDesignator"),
        procedure_description=(
            request_attribute(dataset, "RequestedProcedureDescription")
            or code_text("CodeMeaning")
            or header_text(dataset.get("StudyDescription"))
        ),
        patient_id_issuer=header_text(dataset.get("IssuerOfPatientID")),
    )
