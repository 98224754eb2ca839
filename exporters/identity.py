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
from pydicom.valuerep import DA, DT, TM

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

    def __post_init__(self) -> None:
        for argument in ("name", "version", "manufacturer"):
            value = getattr(self, argument)
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"ModelIdentity.{argument} must be a non-empty string, got {value!r}")
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


def request_attribute(dataset: Dataset, keyword: str) -> str | None:
    """An order attribute from the image header: top level first, then Request Attributes Sequence.

    Modalities put worklist values in either place (the sequence holds one item per requested
    procedure); the first non-empty value wins.
    """
    value = dataset.get(keyword)
    if value not in (None, ""):
        return str(value)
    for item in dataset.get("RequestAttributesSequence") or []:
        value = item.get(keyword)
        if value not in (None, ""):
            return str(value)
    return None


def request_code_item(dataset: Dataset) -> Dataset | None:
    """The coded procedure: Requested Procedure Code Sequence, else Procedure Code Sequence."""
    for holder in [dataset, *(dataset.get("RequestAttributesSequence") or [])]:
        codes = holder.get("RequestedProcedureCodeSequence")
        if codes:
            return codes[0]
    codes = dataset.get("ProcedureCodeSequence")
    return codes[0] if codes else None


def _observation_datetime(dataset: Dataset) -> datetime | None:
    """When the images were taken: Study Date/Time, else Acquisition DateTime; None if neither."""
    study_date = dataset.get("StudyDate")
    if study_date:
        study_time = dataset.get("StudyTime")
        moment = TM(study_time) if study_time else time()
        return datetime.combine(DA(study_date), moment).replace(tzinfo=None)
    acquired = dataset.get("AcquisitionDateTime")
    return DT(acquired).replace(tzinfo=None) if acquired else None


def study_info_from_dataset(dataset: Dataset) -> StudyInfo:
    """Read the ORU's patient, order and procedure from one image of the study."""
    code = request_code_item(dataset)
    return StudyInfo(
        patient_id=str(dataset.get("PatientID") or ""),
        patient_name=str(dataset.get("PatientName") or ""),
        birth_date=str(dataset.get("PatientBirthDate") or ""),
        sex=str(dataset.get("PatientSex") or ""),
        accession_number=str(dataset.get("AccessionNumber") or ""),
        study_instance_uid=str(dataset.get("StudyInstanceUID") or ""),
        observation_datetime=_observation_datetime(dataset),
        placer_order_number=request_attribute(dataset, "PlacerOrderNumberImagingServiceRequest"),
        filler_order_number=request_attribute(dataset, "FillerOrderNumberImagingServiceRequest"),
        procedure_code=str(code.CodeValue) if code is not None and code.get("CodeValue") else None,
        procedure_coding_scheme=(
            str(code.CodingSchemeDesignator)
            if code is not None and code.get("CodingSchemeDesignator")
            else None
        ),
        procedure_description=(
            request_attribute(dataset, "RequestedProcedureDescription")
            or (str(code.CodeMeaning) if code is not None and code.get("CodeMeaning") else None)
            or (str(dataset.StudyDescription) if dataset.get("StudyDescription") else None)
        ),
        patient_id_issuer=str(dataset.IssuerOfPatientID) if dataset.get("IssuerOfPatientID") else None,
    )
