"""What every SR the node writes shares: the checks of its input, the device observer, the header.

`build_sr` (the narrative TID 2000 report) and `build_air_sr` (the IHE AI Results TID 1500 report)
differ only in their content tree. Both take patient, study and order from the first source image
(the frontal view the draft was written from), reference every source image in the evidence, and
are drafts: Verification UNVERIFIED and Preliminary flag PRELIMINARY always, since a model never
signs a report. A corrected draft names the SR it replaces in its Predecessor Documents Sequence.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import highdicom as hd
from pydicom import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import ComprehensiveSRStorage

from exporters.highdicom_tables import slim_module_table
from exporters.identity import ModelIdentity, is_valid_uid, request_attribute, request_code_item
from exporters.sanitize import sanitize_source

_REQUIRED_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID")
# Type 2 attributes highdicom reads from the first source; absent ones are sent empty, as the
# standard allows, instead of failing the whole report.
_PATIENT_STUDY_TYPE2 = (
    "PatientID",
    "PatientName",
    "PatientBirthDate",
    "PatientSex",
    "AccessionNumber",
    "StudyID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
)
# The SR classes a builder may produce (highdicom's, whose constructors take the same arguments).
SRClass = type[hd.sr.ComprehensiveSR] | type[hd.sr.Comprehensive3DSR]


@dataclass(frozen=True)
class PreviousSR:
    """The SR a corrected draft replaces, as the Predecessor Documents Sequence names it."""

    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    sop_class_uid: str = ComprehensiveSRStorage

    def as_dataset(self) -> Dataset:
        """The minimal data set highdicom's `previous_versions` reads (the four UIDs, nothing else)."""
        dataset = Dataset()
        dataset.StudyInstanceUID = self.study_instance_uid
        dataset.SeriesInstanceUID = self.series_instance_uid
        dataset.SOPInstanceUID = self.sop_instance_uid
        dataset.SOPClassUID = self.sop_class_uid
        return dataset


def check_source(source: Sequence[Dataset]) -> None:
    """One study of one patient, each image with its UIDs; source[0] is the image reported on."""
    if isinstance(source, Dataset) or not isinstance(source, Sequence):
        raise TypeError("source must be a sequence of pydicom datasets (the images the report reads)")
    if not source:
        raise ValueError("source is empty: an SR must reference the image it reports on")
    for index, dataset in enumerate(source):
        if not isinstance(dataset, Dataset):
            raise TypeError(f"source[{index}] must be a pydicom Dataset, got {type(dataset).__name__}")
        for keyword in _REQUIRED_UIDS:
            if not dataset.get(keyword):
                raise ValueError(f"source[{index}] has no {keyword}")
    first = source[0]
    for index, dataset in enumerate(source[1:], start=1):
        if dataset.StudyInstanceUID != first.StudyInstanceUID:
            raise ValueError(
                f"source[{index}] is from a different study than source[0]: one SR reports one study"
            )
        if dataset.get("PatientID", "") != first.get("PatientID", ""):
            raise ValueError(f"source[{index}] has a different PatientID than source[0]")


def check_model(model: ModelIdentity) -> None:
    if not isinstance(model, ModelIdentity):
        raise TypeError(f"model must be a ModelIdentity, got {type(model).__name__}")


@dataclass(frozen=True)
class Placement:
    """Where an SR goes (series and instance numbers and UIDs) and which earlier SR it corrects.

    The builders take these as keyword arguments; a UID left None gets a new one in `checked`.
    """

    series_number: int
    instance_number: int
    series_instance_uid: str | None = None
    sop_instance_uid: str | None = None
    corrects: PreviousSR | None = None

    def checked(self, first: Dataset) -> Placement:
        """This placement with both UIDs set, once each value is valid; a bad one is refused by name.

        `first`: the image the SR reports on, whose study a corrected SR must belong to.
        """
        for argument in ("series_number", "instance_number"):
            number = getattr(self, argument)
            if isinstance(number, bool) or not isinstance(number, int) or number < 1:
                raise ValueError(f"{argument} must be a positive integer, got {number!r}")
        for argument in ("series_instance_uid", "sop_instance_uid"):
            uid = getattr(self, argument)
            if uid is not None and not is_valid_uid(uid):
                raise ValueError(f"{argument} {uid!r} is not a valid DICOM UID")
        _check_corrects(self.corrects, first, self.sop_instance_uid)
        return dataclasses.replace(
            self,
            series_instance_uid=self.series_instance_uid or hd.UID(),
            sop_instance_uid=self.sop_instance_uid or hd.UID(),
        )


def _check_corrects(corrects: PreviousSR | None, first: Dataset, sop_instance_uid: str | None) -> None:
    """A predecessor must be a valid reference to another SR of the same study."""
    if corrects is None:
        return
    if not isinstance(corrects, PreviousSR):
        raise TypeError(f"corrects must be a PreviousSR, got {type(corrects).__name__}")
    for name in ("study_instance_uid", "series_instance_uid", "sop_instance_uid", "sop_class_uid"):
        uid = getattr(corrects, name)
        if not isinstance(uid, str) or not is_valid_uid(uid):
            raise ValueError(f"corrects.{name} {uid!r} is not a valid DICOM UID")
    if corrects.study_instance_uid != str(first.StudyInstanceUID):
        raise ValueError("corrects names an SR of another study: a draft corrects only its own study's SR")
    if sop_instance_uid is not None and corrects.sop_instance_uid == sop_instance_uid:
        raise ValueError("corrects names this SR itself: a corrected draft needs a new SOP Instance UID")


def device_observer(model: ModelIdentity) -> hd.sr.ObservationContext:
    """The model as the DEVICE observer (TID 1002 / TID 1004): its UID, name, maker and build."""
    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=model.uid,
        name=model.name,
        manufacturer_name=model.manufacturer,
        model_name=model.label,
    )
    return hd.sr.ObservationContext(
        observer_device_context=hd.sr.ObserverContext(
            observer_type=codes.cid270.Device, observer_identifying_attributes=device
        )
    )


def build_document(
    sr_class: SRClass,
    source: Sequence[Dataset],
    content: Dataset,
    model: ModelIdentity,
    placement: Placement,
    *,
    texts: Sequence[str],
    series_description: str,
    is_complete: bool = False,
) -> Dataset:
    """The SR around `content`: patient, study and order from source[0], every source as evidence.

    `texts`: the free text the content carries, which decides the character set. Check the source,
    the model and the placement first; what highdicom still refuses becomes one ValueError.
    """
    header = _patient_study_header(source[0])
    requested = _referenced_request(header)
    model_texts = [model.name, model.version, model.manufacturer, model.decoding or ""]
    slim_module_table()  # highdicom reads 6,559 attributes of its module table, not the whole 22 MB
    try:
        return sr_class(
            evidence=[header, *(_evidence_only(image) for image in source[1:])],
            content=content,
            series_instance_uid=placement.series_instance_uid,
            series_number=placement.series_number,
            sop_instance_uid=placement.sop_instance_uid,
            instance_number=placement.instance_number,
            manufacturer=model.manufacturer,
            manufacturer_model_name=model.name,
            software_versions=model.version,
            series_description=series_description[:64],
            is_complete=is_complete,
            is_final=False,
            is_verified=False,
            requested_procedures=[requested] if requested is not None else None,
            previous_versions=[placement.corrects.as_dataset()] if placement.corrects is not None else None,
            specific_character_set=_character_set(header, [*texts, *model_texts]),
        )
    except Exception as error:  # noqa: BLE001 - one clear refusal, whatever highdicom raised
        # highdicom's message may quote a header value (an identifier): only its kind is kept.
        raise ValueError(
            f"highdicom cannot build the SR from the source header ({type(error).__name__})"
        ) from error


def _character_set(header: Dataset, texts: list[str]) -> str | list[str] | None:
    """The source's character set, or UTF-8 (ISO_IR 192) when the report needs more than ASCII.

    Keeping the source's set when it suffices suits older PACS that lack UTF-8; switching is always
    safe because pydicom re-encodes the copied patient attributes from their decoded text.
    """
    if all(text.isascii() for text in texts):
        return header.get("SpecificCharacterSet")
    return "ISO_IR 192"


def _patient_study_header(image: Dataset) -> Dataset:
    """The image's attributes without pixel data, each valid for its VR (`sanitize_source`: invalid
    ones repaired, truncated or left empty), with absent Type 2 patient/study attributes empty.

    highdicom copies patient and study from this header; the caller's dataset is never modified.
    """
    header, _notes = sanitize_source(image)
    for keyword in _PATIENT_STUDY_TYPE2:
        if keyword not in header:
            setattr(header, keyword, "")
    return header


def _evidence_only(image: Dataset) -> Dataset:
    """What highdicom reads from a further source image: its UIDs (and nothing it could refuse)."""
    evidence = Dataset()
    for keyword in (*_REQUIRED_UIDS, "PatientID"):
        if keyword in image:
            evidence[keyword] = image[keyword]
    return evidence


def _referenced_request(header: Dataset) -> Dataset | None:
    """The order this SR answers; None for an unscheduled study (no accession number).

    The SR Document General module requires the sequence only when the SR fulfils a requested
    procedure, so a study without an accession number gets an SR without it rather than no SR.
    """
    accession = header.get("AccessionNumber")
    if not accession:
        return None
    item = Dataset()
    item.StudyInstanceUID = header.StudyInstanceUID
    item.ReferencedStudySequence = []
    item.AccessionNumber = accession
    if header.get("IssuerOfAccessionNumberSequence"):
        item.IssuerOfAccessionNumberSequence = header.IssuerOfAccessionNumberSequence
    item.PlacerOrderNumberImagingServiceRequest = (
        request_attribute(header, "PlacerOrderNumberImagingServiceRequest") or ""
    )
    item.FillerOrderNumberImagingServiceRequest = (
        request_attribute(header, "FillerOrderNumberImagingServiceRequest") or ""
    )
    item.RequestedProcedureID = request_attribute(header, "RequestedProcedureID") or ""
    item.RequestedProcedureDescription = request_attribute(header, "RequestedProcedureDescription") or ""
    code = request_code_item(header)
    item.RequestedProcedureCodeSequence = [code] if code is not None else []
    return item
