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
from enum import StrEnum

import highdicom as hd
from pydicom import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from exporters.identity import ModelIdentity
from exporters.sr_common import (
    Placement,
    PreviousSR,
    build_document,
    check_model,
    check_source,
    device_observer,
)
from exporters.text import check_sections

__all__ = ["Completion", "PreviousSR", "build_sr"]

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
    check_source(source)
    findings_lines, impression_lines = check_sections(findings, impression)
    check_model(model)
    placement = Placement(
        series_number, instance_number, series_instance_uid, sop_instance_uid, corrects
    ).checked(source[0])
    try:
        completion_flag = Completion(completion)
    except ValueError:
        raise ValueError(f"completion must be PARTIAL or COMPLETE, got {completion!r}") from None

    root = hd.sr.ContainerContentItem(name=REPORT_TITLE, is_content_continuous=False, template_id="2000")
    root.ContentSequence = [
        *hd.sr.LanguageOfContentItemAndDescendants(_language_code(language)),
        *device_observer(model),
        *_decoding(model),
        *_section(FINDINGS_HEADING, FINDING_ITEM, findings_lines, source),
        *_section(IMPRESSIONS_HEADING, IMPRESSION_ITEM, impression_lines, []),
    ]
    return build_document(
        hd.sr.ComprehensiveSR,
        source,
        root,
        model,
        placement,
        texts=[*findings_lines, *impression_lines],
        series_description=f"Draft report {model.label}",
        is_complete=completion_flag is Completion.COMPLETE,
    )


def _language_code(language: str) -> hd.sr.CodedConcept:
    if not isinstance(language, str) or not _LANGUAGE_TAG.match(language):
        raise ValueError(f"language must be an RFC 5646 tag such as 'en-US', got {language!r}")
    return hd.sr.CodedConcept(
        value=language, scheme_designator="RFC5646", meaning=LANGUAGE_MEANINGS.get(language, language)
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
