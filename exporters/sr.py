"""The draft report as a DICOM Comprehensive SR following TID 2000 "Basic Diagnostic Imaging Report".

Content tree (dsrdump shows it this way)::

    CONTAINER (18748-4, LN, "Diagnostic Imaging Report")            TID 2000, SEPARATE
      HAS CONCEPT MOD  CODE (121049, DCM, "Language of Content Item and Descendants")   TID 1204
      HAS OBS CONTEXT  CODE (121005, DCM, "Observer Type") = Device                      TID 1002
      HAS OBS CONTEXT  UIDREF / TEXT  device UID, name, manufacturer, model name        TID 1004
      CONTAINS CONTAINER (121070, DCM, "Findings")
        CONTAINS TEXT  (121071, DCM, "Finding")        one per line
        CONTAINS IMAGE (121080, DCM, "Best illustration of finding")   one per source image
      CONTAINS CONTAINER (121072, DCM, "Impressions")
        CONTAINS TEXT  (121073, DCM, "Impression")     one per line

The section headings are the CID 7001 heading codes (121070 Findings, 121072 Impressions); the
items in them are the CID 7002 element codes (121071 Finding, 121073 Impression). Comprehensive SR
rather than Enhanced or Basic Text SR: all three pass dciodvfy with this tree, and Comprehensive is
the class PACS viewers support most widely that still allows adding spatial coordinates later.

A corrected draft (`corrects=`, the study drafted again from its frontal view after a draft read
from a lateral) is a new SR instance, in a new series, whose Predecessor Documents Sequence
(0040,A360) names the SR it replaces (study, series and SOP instance UIDs, SOP class). It stays a
preliminary: Completion, Verification and Preliminary flags are those of any draft.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

import highdicom as hd
from pydicom import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from pydicom.uid import ComprehensiveSRStorage

from exporters.identity import ModelIdentity, is_valid_uid, request_attribute, request_code_item
from exporters.sanitize import sanitize_source
from exporters.text import check_sections

REPORT_TITLE = codes.LN.DiagnosticImagingReport  # 18748-4
FINDINGS_HEADING = codes.DCM.Findings  # 121070, CID 7001
IMPRESSIONS_HEADING = codes.DCM.Impressions  # 121072, CID 7001
FINDING_ITEM = codes.DCM.Finding  # 121071, CID 7002
IMPRESSION_ITEM = codes.DCM.Impression  # 121073, CID 7002
IMAGE_PURPOSE = codes.DCM.BestIllustrationOfFinding  # 121080, CID 7003

# Common RFC 5646 tags with readable meanings; CID 5000 is extensible, so other well-formed tags
# are accepted with the tag itself as the meaning.
LANGUAGE_MEANINGS = {
    "en": "English",
    "en-US": "English (United States)",
    "en-GB": "English (United Kingdom)",
    "de": "German",
    "de-DE": "German (Germany)",
    "fr": "French",
    "fr-FR": "French (France)",
    "es": "Spanish",
    "it": "Italian",
    "nl": "Dutch",
}
_LANGUAGE_TAG = re.compile(r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$")

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


class Completion(StrEnum):
    PARTIAL = "PARTIAL"  # a draft awaiting the radiologist
    COMPLETE = "COMPLETE"


def build_sr(
    source: Sequence[Dataset],
    findings: str,
    impression: str,
    model: ModelIdentity,
    *,
    series_number: int = 999,
    instance_number: int = 1,
    completion: str = "PARTIAL",
    language: str = "en-US",
    series_instance_uid: str | None = None,
    sop_instance_uid: str | None = None,
    corrects: PreviousSR | None = None,
) -> Dataset:
    """The SR for one study; patient, study and order come from `source`, the images it reports on.

    Verification UNVERIFIED and Preliminary PRELIMINARY always: a model never signs a report. New
    series and instance UIDs unless given (pass stored ones to make a resend overwrite, not add).
    `corrects`: the earlier draft's SR this one replaces (same study, another instance UID).
    """
    _check_source(source)
    findings_lines, impression_lines = check_sections(findings, impression)
    if not isinstance(model, ModelIdentity):
        raise TypeError(f"model must be a ModelIdentity, got {type(model).__name__}")
    for argument, number in (("series_number", series_number), ("instance_number", instance_number)):
        if isinstance(number, bool) or not isinstance(number, int) or number < 1:
            raise ValueError(f"{argument} must be a positive integer, got {number!r}")
    try:
        completion_flag = Completion(completion)
    except ValueError:
        raise ValueError(f"completion must be PARTIAL or COMPLETE, got {completion!r}") from None
    for argument, uid in (
        ("series_instance_uid", series_instance_uid),
        ("sop_instance_uid", sop_instance_uid),
    ):
        if uid is not None and not is_valid_uid(uid):
            raise ValueError(f"{argument} {uid!r} is not a valid DICOM UID")
    _check_corrects(corrects, source[0], sop_instance_uid)

    root = hd.sr.ContainerContentItem(name=REPORT_TITLE, is_content_continuous=False, template_id="2000")
    root.ContentSequence = [
        *hd.sr.LanguageOfContentItemAndDescendants(_language_code(language)),
        *_device_observer(model),
        *_decoding(model),
        *_section(FINDINGS_HEADING, FINDING_ITEM, findings_lines, source),
        *_section(IMPRESSIONS_HEADING, IMPRESSION_ITEM, impression_lines, []),
    ]
    header = _patient_study_header(source[0])
    requested = _referenced_request(header)
    texts = [
        *findings_lines,
        *impression_lines,
        model.name,
        model.version,
        model.manufacturer,
        model.decoding or "",
    ]
    try:
        return hd.sr.ComprehensiveSR(
            evidence=[header, *(_evidence_only(image) for image in source[1:])],
            content=root,
            series_instance_uid=series_instance_uid or hd.UID(),
            series_number=series_number,
            sop_instance_uid=sop_instance_uid or hd.UID(),
            instance_number=instance_number,
            manufacturer=model.manufacturer,
            manufacturer_model_name=model.name,
            software_versions=model.version,
            series_description=f"Draft report {model.label}"[:64],
            is_complete=completion_flag is Completion.COMPLETE,
            is_final=False,
            is_verified=False,
            requested_procedures=[requested] if requested is not None else None,
            previous_versions=[corrects.as_dataset()] if corrects is not None else None,
            specific_character_set=_character_set(header, texts),
        )
    except Exception as error:  # noqa: BLE001 - one clear refusal, whatever highdicom raised
        # highdicom's message may quote a header value (an identifier): only its kind is kept.
        raise ValueError(
            f"highdicom cannot build the SR from the source header ({type(error).__name__})"
        ) from error


def _check_source(source: Sequence[Dataset]) -> None:
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


def _character_set(header: Dataset, texts: list[str]) -> str | list[str] | None:
    """The source's character set, or UTF-8 (ISO_IR 192) when the report needs more than ASCII.

    Keeping the source's set when it suffices suits older PACS that lack UTF-8; switching is always
    safe because pydicom re-encodes the copied patient attributes from their decoded text.
    """
    if all(text.isascii() for text in texts):
        return header.get("SpecificCharacterSet")
    return "ISO_IR 192"


def _language_code(language: str) -> hd.sr.CodedConcept:
    if not isinstance(language, str) or not _LANGUAGE_TAG.match(language):
        raise ValueError(f"language must be an RFC 5646 tag such as 'en-US', got {language!r}")
    return hd.sr.CodedConcept(
        value=language, scheme_designator="RFC5646", meaning=LANGUAGE_MEANINGS.get(language, language)
    )


def _device_observer(model: ModelIdentity) -> hd.sr.ObservationContext:
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


def _decoding(model: ModelIdentity) -> list[hd.sr.TextContentItem]:
    """Which decoding wrote the draft, as an Algorithm Parameters (DCM 111002) TEXT item; none if unknown."""
    if model.decoding is None:
        return []
    return [
        hd.sr.TextContentItem(
            name=codes.DCM.AlgorithmParameters, value=model.decoding, relationship_type="HAS CONCEPT MOD"
        )
    ]


def _section(
    heading: Code, item_name: Code, lines: list[str], images: Sequence[Dataset]
) -> list[hd.sr.ContainerContentItem]:
    """One heading container with a TEXT item per line and an IMAGE item per image; none if empty."""
    if not lines:
        return []
    container = hd.sr.ContainerContentItem(
        name=heading, is_content_continuous=False, relationship_type="CONTAINS"
    )
    container.ContentSequence = [
        *(hd.sr.TextContentItem(name=item_name, value=line, relationship_type="CONTAINS") for line in lines),
        *(
            hd.sr.ImageContentItem(
                name=IMAGE_PURPOSE,
                referenced_sop_class_uid=image.SOPClassUID,
                referenced_sop_instance_uid=image.SOPInstanceUID,
                relationship_type="CONTAINS",
            )
            for image in images
        ),
    ]
    return [container]


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
