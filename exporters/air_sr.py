"""The draft's coded findings as an IHE AI Results (AIR) SR: Comprehensive 3D SR, TID 1500.

The narrative SR (`exporters.sr.build_sr`, TID 2000) carries the draft's text; this one carries
what the text states, coded (`exporters.readings.draft_readings`), so that AI-ready viewers and
registries can read the findings without parsing prose. Content tree::

    CONTAINER (126000, DCM, "Imaging Measurement Report")                          TID 1500
      HAS CONCEPT MOD  CODE (121049, DCM, "Language of Content Item...") = en-US   TID 1204
      HAS OBS CONTEXT  observer type Device; device UID, name, manufacturer, model  TID 1002, 1004
      HAS CONCEPT MOD  CODE (121058, DCM, "Procedure reported") = (43468-8, LN)
      CONTAINS CONTAINER (111028, DCM, "Image Library")                            TID 1600 [a]
      CONTAINS CONTAINER (126010, DCM, "Imaging Measurements")
        CONTAINS CONTAINER (125007, DCM, "Measurement Group")          TID 1501, one per reading
          HAS OBS CONTEXT  TEXT / UIDREF  tracking identifier ("Pleural effusion") and UID
          HAS CONCEPT MOD  CODE (363698007, SCT, "Finding Site") = Pleura    where a side or lobe
            HAS CONCEPT MOD  CODE (272741003, SCT, "Laterality") = Left
          HAS CONCEPT MOD  TEXT  algorithm name, version, manufacturer, parameters   TID 4019
          CONTAINS CODE (60046008, SCT, "Pleural effusion") = (52101004, SCT, "Present")
          CONTAINS IMAGE (121112, DCM, "Source of Measurement") -> the frontal image

Each reading is a qualitative evaluation whose concept name is the finding and whose value its
presence (CID 240: Present, Absent, Undetermined); codes and their sources are in
`exporters.air_codes`. One group per reading because TID 1501 puts the finding site (side, lobe)
on the group, not on an evaluation. Every group names the model (TID 4019, the decoding as its
parameter) and references the frontal image the draft was written from (source[0]).

A draft whose text names no finding class still gets an SR: one group with the tracking
identifier "No finding coded", the algorithm and the image, and no evaluation. TID 1500 needs one
of its result containers, highdicom's MeasurementReport builds only the Imaging Measurements one
and wants a group in it, TID 1501 makes every evaluation optional, and no code says "nothing was
coded" without also claiming a normal study, which the draft's silence does not.

[a] The Image Library (TID 1600, optional in TID 1500) describes the image with the attributes
TID 1602/1603 require (rows, columns; for projection radiography the patient orientation and
imager pixel spacing). An image whose header lacks them is left out of the library and is still
referenced by every group.

Header, flags and `corrects` are those of `build_sr` (`exporters.sr_common`): patient, study and
order from source[0], Completion PARTIAL, Verification UNVERIFIED, Preliminary flag PRELIMINARY.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import highdicom as hd
from pydicom import Dataset

from exporters.air_codes import (
    FINDING_CODES,
    LATERALITY_CODES,
    LOBE_SITES,
    PRESENCE_CODES,
    PROCEDURE_REPORTED,
    SIDE_SITES,
)
from exporters.identity import ModelIdentity
from exporters.readings import FindingReading, check_readings
from exporters.sr_common import (
    Placement,
    PreviousSR,
    build_document,
    check_model,
    check_source,
    device_observer,
)

NO_FINDING_CODED = "No finding coded"
# Tracking UIDs are a pure function of (SR instance, finding): a resend with the stored SOP
# Instance UID gives the same document, content included.
_TRACKING_UID_NAMESPACE = uuid.UUID("0f5d3c1e-8a0b-4c7e-9d62-3b1f7a2e9c45")


def build_air_sr(
    source: Sequence[Dataset],
    readings: Sequence[FindingReading],
    model: ModelIdentity,
    *,
    series_number: int = 998,
    instance_number: int = 1,
    series_instance_uid: str | None = None,
    sop_instance_uid: str | None = None,
    corrects: PreviousSR | None = None,
) -> Dataset:
    """The AI Results SR for one draft: `readings` coded against source[0], the frontal image.

    Same source checks, header and flags as `build_sr`; `corrects` names the AIR SR this one
    replaces. Pass stored UIDs to make a resend overwrite, not add.
    """
    check_source(source)
    check_readings(readings)
    check_model(model)
    placement = Placement(
        series_number, instance_number, series_instance_uid, sop_instance_uid, corrects
    ).checked(source[0])
    frontal = source[0]
    algorithm = hd.sr.AlgorithmIdentification(
        name=model.name,
        version=model.version,
        parameters=[model.decoding] if model.decoding is not None else None,
        manufacturer=model.manufacturer,
    )
    image = hd.sr.SourceImageForMeasurementGroup(
        referenced_sop_class_uid=frontal.SOPClassUID, referenced_sop_instance_uid=frontal.SOPInstanceUID
    )
    groups = [_group(reading, algorithm, image, placement.sop_instance_uid) for reading in readings] or [
        hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=_tracking(NO_FINDING_CODED, placement.sop_instance_uid, "none"),
            algorithm_id=algorithm,
            source_images=[image],
        )
    ]
    report = hd.sr.MeasurementReport(
        observation_context=device_observer(model),
        procedure_reported=PROCEDURE_REPORTED,
        imaging_measurements=groups,
        referenced_images=[frontal] if _describable(frontal) else None,
    )
    return build_document(
        hd.sr.Comprehensive3DSR,
        source,
        report[0],
        model,
        placement,
        texts=[],
        series_description=f"AI results {model.label}",
    )


def _group(
    reading: FindingReading,
    algorithm: hd.sr.AlgorithmIdentification,
    image: hd.sr.SourceImageForMeasurementGroup,
    sop_instance_uid: str,
) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    """One TID 1501 group: the finding's presence, where it is, who said so, on which image."""
    finding = FINDING_CODES[reading.finding]
    site = _finding_site(reading)
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=_tracking(finding.meaning, sop_instance_uid, reading.finding),
        algorithm_id=algorithm,
        finding_sites=[site] if site is not None else None,
        qualitative_evaluations=[
            hd.sr.QualitativeEvaluation(name=finding, value=PRESENCE_CODES[reading.label])
        ],
        source_images=[image],
    )


def _finding_site(reading: FindingReading) -> hd.sr.FindingSite | None:
    """The lobe with its side, or the structure the side is of; None when the text gives neither."""
    if reading.lobe is not None:
        lobe, side = LOBE_SITES[reading.lobe]
        return hd.sr.FindingSite(anatomic_location=lobe, laterality=LATERALITY_CODES[side])
    if reading.side is not None:
        return hd.sr.FindingSite(
            anatomic_location=SIDE_SITES[reading.finding], laterality=LATERALITY_CODES[reading.side]
        )
    return None


def _tracking(identifier: str, sop_instance_uid: str, key: str) -> hd.sr.TrackingIdentifier:
    uid = f"2.25.{uuid.uuid5(_TRACKING_UID_NAMESPACE, f'{sop_instance_uid}/{key}').int}"
    return hd.sr.TrackingIdentifier(uid=uid, identifier=identifier)


def _describable(image: Dataset) -> bool:
    """Whether highdicom's Image Library entry (TID 1601-1603) can describe the image from its header."""
    try:
        hd.sr.ImageLibrary([image])
    except (AttributeError, IndexError, KeyError, TypeError, ValueError):
        return False
    return True
