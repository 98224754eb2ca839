"""build_air_sr: the draft's readings as a TID 1500 Comprehensive 3D SR, read back with highdicom."""

from __future__ import annotations

import dataclasses
import subprocess
from collections.abc import Callable
from pathlib import Path

import highdicom as hd
import pytest
from pydicom import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import Comprehensive3DSRStorage

from echo.findings import ATTRIBUTES, FINDINGS, LOBES, Label
from exporters.air_codes import FINDING_CODES, LOBE_SITES, PRESENCE_CODES, SIDE_SITES
from exporters.air_sr import build_air_sr
from exporters.identity import ModelIdentity
from exporters.readings import FindingReading, draft_readings
from tests.exporters.test_sr_builder import previous_of, write_sr

MakeImage = Callable[..., Dataset]
READINGS = draft_readings(
    "The heart is enlarged. Small left pleural effusion. No pneumothorax. Right lower lobe consolidation.",
    "Cardiomegaly. Possible edema.",
)
# (finding, presence, (site, laterality) or None) for READINGS, written out so a changed code shows
EXPECTED = [
    ("8186001", "52101004", None),  # cardiomegaly present
    ("60046008", "52101004", ("3120008", "7771000")),  # pleural effusion present, pleura, left
    ("36118008", "272519000", None),  # pneumothorax absent
    ("95436008", "52101004", ("90572001", "24028007")),  # consolidation present, lower lobe, right
    ("19242006", "373068000", None),  # pulmonary edema undetermined
]
ALGORITHM_ITEMS = {
    "111001": "Algorithm Name",
    "111003": "Algorithm Version",
    "122405": "Algorithm Manufacturer",
}


def coded_findings(sr: hd.sr.Comprehensive3DSR) -> list[tuple[str, str, tuple[str, str] | None]]:
    """(finding, presence, site) of each measurement group, as highdicom's TID 1500 reader gives them."""
    found = []
    for group in sr.content.get_image_measurement_groups():
        for evaluation in group.get_qualitative_evaluations():
            sites = [(site.value.value, site.laterality.value) for site in group.finding_sites]
            found.append((evaluation.name.value, evaluation.value.value, sites[0] if sites else None))
    return found


def algorithm_of(group: hd.sr.MeasurementsAndQualitativeEvaluations) -> dict[str, list[str]]:
    """The TID 4019 items of a group: concept name code -> values."""
    items: dict[str, list[str]] = {}
    for item in hd.sr.utils.find_content_items(
        group[0], relationship_type="HAS CONCEPT MOD", value_type="TEXT"
    ):
        items.setdefault(item.name.value, []).append(item.value)
    return items


def dciodvfy_problems(sr: Dataset, folder: Path) -> list[str]:
    result = subprocess.run(
        ["dciodvfy", str(write_sr(sr, folder))], capture_output=True, text=True, check=False
    )
    lines = (result.stdout + result.stderr).splitlines()
    assert "Comprehensive3DSR" in lines
    return [line for line in lines if line.startswith(("Error", "Warning"))]


# --- the content tree ---------------------------------------------------------------------------


def test_each_reading_reads_back_as_a_coded_finding(
    image: Dataset, model: ModelIdentity, tmp_path: Path
) -> None:
    sr = build_air_sr([image], READINGS, model)

    from_dataset = hd.sr.Comprehensive3DSR.from_dataset(sr)
    from_file = hd.sr.srread(write_sr(sr, tmp_path))

    assert isinstance(from_file, hd.sr.Comprehensive3DSR)
    assert coded_findings(from_dataset) == coded_findings(from_file) == EXPECTED
    assert [reading.finding for reading in READINGS] == [
        "cardiomegaly",
        "pleural_effusion",
        "pneumothorax",
        "consolidation",
        "edema",
    ]


def test_root_is_tid_1500_with_a_device_observer(image: Dataset, model: ModelIdentity) -> None:
    sr = build_air_sr([image], READINGS, model)

    assert sr.SOPClassUID == Comprehensive3DSRStorage
    assert sr.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    assert sr.ConceptNameCodeSequence[0].CodeValue == "126000"  # Imaging Measurement Report
    report = hd.sr.Comprehensive3DSR.from_dataset(sr).content
    (observer,) = report.get_observer_contexts()
    items = {item.name.value: item.value for item in observer}
    assert items["121005"].value == "121007"  # observer type: Device
    assert items["121012"] == model.uid
    assert items["121013"] == "echo-student"
    procedure = [item for item in sr.ContentSequence if item.ConceptNameCodeSequence[0].CodeValue == "121058"]
    assert procedure[0].ConceptCodeSequence[0].CodeValue == "43468-8"


def test_every_group_names_the_model_and_references_the_frontal_image(
    model: ModelIdentity, make_image: MakeImage
) -> None:
    frontal = make_image()
    lateral = make_image(StudyInstanceUID=frontal.StudyInstanceUID, ViewPosition="LL")
    decoded = dataclasses.replace(model, decoding="multistep steps=8 tau=0.85")

    sr = build_air_sr([frontal, lateral], READINGS, decoded)

    groups = hd.sr.Comprehensive3DSR.from_dataset(sr).content.get_image_measurement_groups()
    assert len(groups) == len(READINGS)
    for group in groups:
        assert [image.referenced_sop_instance_uid for image in group.source_images] == [
            frontal.SOPInstanceUID
        ]
        assert algorithm_of(group) == {
            "111001": ["echo-student"],
            "111003": ["1.2.0"],
            "122405": ["ECHO Project"],
            "111002": ["multistep steps=8 tau=0.85"],
        }
    # the evidence lists every source image, the lateral too
    referenced = {
        instance.ReferencedSOPInstanceUID
        for series in sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence
        for instance in series.ReferencedSOPSequence
    }
    assert referenced == {frontal.SOPInstanceUID, lateral.SOPInstanceUID}


def test_without_a_decoding_the_algorithm_has_no_parameters(image: Dataset, model: ModelIdentity) -> None:
    (group,) = hd.sr.Comprehensive3DSR.from_dataset(
        build_air_sr([image], READINGS[:1], model)
    ).content.get_image_measurement_groups()

    assert set(algorithm_of(group)) == set(ALGORITHM_ITEMS)


def test_a_draft_without_findings_gets_one_group_without_evaluations(
    image: Dataset, model: ModelIdentity
) -> None:
    readings = draft_readings("Degenerative changes of the spine.", "Limited study.")
    assert readings == ()

    sr = build_air_sr([image], readings, model)

    (group,) = hd.sr.Comprehensive3DSR.from_dataset(sr).content.get_image_measurement_groups()
    assert group.tracking_identifier == "No finding coded"
    assert group.get_qualitative_evaluations() == []
    assert [item.referenced_sop_instance_uid for item in group.source_images] == [image.SOPInstanceUID]
    assert algorithm_of(group)["111001"] == ["echo-student"]


def test_a_label_given_as_its_value_is_coded_alike(image: Dataset, model: ModelIdentity) -> None:
    sr = build_air_sr([image], [FindingReading("edema", "uncertain")], model)  # type: ignore[arg-type]

    assert coded_findings(hd.sr.Comprehensive3DSR.from_dataset(sr)) == [("19242006", "373068000", None)]


def test_the_image_library_describes_the_frontal_image_when_its_header_allows(
    model: ModelIdentity, make_image: MakeImage
) -> None:
    described = make_image(PatientOrientation=["P", "F"], ImagerPixelSpacing=[0.139, 0.139])
    bare = make_image()  # no patient orientation or imager pixel spacing: TID 1603 cannot describe it

    def library(sr: Dataset) -> list[Dataset]:
        return [item for item in sr.ContentSequence if item.ConceptNameCodeSequence[0].CodeValue == "111028"]

    (entry,) = library(build_air_sr([described], READINGS, model))
    (group,) = entry.ContentSequence
    (reference,) = group.ContentSequence
    assert reference.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == described.SOPInstanceUID
    assert library(build_air_sr([bare], READINGS, model)) == []


def test_tracking_uids_follow_the_sr_instance_so_a_resend_is_identical(
    image: Dataset, model: ModelIdentity
) -> None:
    def tracking_uids(sop_instance_uid: str) -> list[str]:
        sr = build_air_sr([image], READINGS, model, sop_instance_uid=sop_instance_uid)
        return [
            group.tracking_uid
            for group in hd.sr.Comprehensive3DSR.from_dataset(sr).content.get_image_measurement_groups()
        ]

    first = tracking_uids("1.2.826.0.1.3680043.8.498.21")

    assert tracking_uids("1.2.826.0.1.3680043.8.498.21") == first
    assert len(set(first)) == len(READINGS)
    assert set(tracking_uids("1.2.826.0.1.3680043.8.498.22")).isdisjoint(first)


# --- header and flags -----------------------------------------------------------------------------


def test_a_draft_partial_unverified_preliminary_of_the_same_patient_and_order(
    image: Dataset, model: ModelIdentity
) -> None:
    sr = build_air_sr([image], READINGS, model, instance_number=2)

    assert (sr.CompletionFlag, sr.VerificationFlag, sr.PreliminaryFlag) == (
        "PARTIAL",
        "UNVERIFIED",
        "PRELIMINARY",
    )
    for keyword in ("PatientID", "PatientName", "PatientBirthDate", "StudyInstanceUID", "AccessionNumber"):
        assert sr[keyword].value == image[keyword].value, keyword
    assert (sr.Modality, sr.SeriesNumber, sr.InstanceNumber) == ("SR", 998, 2)
    assert sr.SeriesInstanceUID != image.SeriesInstanceUID
    assert sr.ReferencedRequestSequence[0].RequestedProcedureID == "RP42"
    assert "PixelData" not in sr


def test_a_corrected_draft_names_the_air_sr_it_replaces(image: Dataset, model: ModelIdentity) -> None:
    previous = previous_of(image, sop_class_uid=Comprehensive3DSRStorage)

    sr = build_air_sr([image], READINGS, model, corrects=previous)

    (study,) = sr.PredecessorDocumentsSequence
    (series,) = study.ReferencedSeriesSequence
    (instance,) = series.ReferencedSOPSequence
    assert (series.SeriesInstanceUID, instance.ReferencedSOPInstanceUID) == (
        previous.series_instance_uid,
        previous.sop_instance_uid,
    )
    assert instance.ReferencedSOPClassUID == Comprehensive3DSRStorage
    assert sr.VerificationFlag == "UNVERIFIED"
    assert "PredecessorDocumentsSequence" not in build_air_sr([image], READINGS, model)


# --- the SR as dciodvfy reads it -----------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.parametrize(
    ("readings", "image_values", "options"),
    [
        (READINGS, {}, {}),
        ((), {}, {}),
        (READINGS, {"PatientOrientation": ["P", "F"], "ImagerPixelSpacing": [0.139, 0.139]}, {}),
        (READINGS, {"AccessionNumber": ""}, {"corrects": "previous"}),
    ],
    ids=["readings", "no-readings", "image-library", "corrected-unscheduled"],
)
def test_dciodvfy_finds_no_errors(
    readings: tuple[FindingReading, ...],
    image_values: dict,
    options: dict,
    model: ModelIdentity,
    make_image: MakeImage,
    tmp_path: Path,
) -> None:
    image = make_image(**image_values)
    if options.get("corrects"):
        options = {"corrects": previous_of(image, sop_class_uid=Comprehensive3DSRStorage)}
    decoded = dataclasses.replace(model, decoding="onestep")

    assert dciodvfy_problems(build_air_sr([image], readings, decoded, **options), tmp_path) == []


@pytest.mark.integration
def test_non_ascii_model_text_switches_to_utf8_and_still_passes(
    make_image: MakeImage, model: ModelIdentity, tmp_path: Path
) -> None:
    latin = make_image(SpecificCharacterSet="ISO_IR 100", PatientName="Müller^Jörg")
    sr = build_air_sr([latin], READINGS, dataclasses.replace(model, manufacturer="Écho Project"))

    assert sr.SpecificCharacterSet == "ISO_IR 192"
    assert dciodvfy_problems(sr, tmp_path) == []


# --- refusals -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sources", "readings", "options", "error", "message"),
    [
        (lambda make: [], READINGS, {}, ValueError, "source is empty"),
        (lambda make: make(), READINGS, {}, TypeError, "source must be a sequence"),
        (lambda make: [make(SOPInstanceUID="")], READINGS, {}, ValueError, r"source\[0\] has no SOPInstanceUID"),
        (lambda make: [make(), make()], READINGS, {}, ValueError, r"source\[1\] is from a different study"),
        (lambda make: [make()], "cardiomegaly", {}, TypeError, "readings must be a sequence of FindingReading"),
        (lambda make: [make()], READINGS[0], {}, TypeError, "readings must be a sequence of FindingReading"),
        (lambda make: [make()], [("cardiomegaly", "positive")], {}, TypeError, r"readings\[0\] must be a FindingReading, got tuple"),
        (lambda make: [make()], [FindingReading("fracture", Label.POSITIVE)], {}, ValueError, r"readings\[0\].finding 'fracture' is not a class"),
        (lambda make: [make()], [READINGS[0], READINGS[0]], {}, ValueError, r"readings\[1\] repeats cardiomegaly"),
        (lambda make: [make()], [FindingReading("edema", "maybe")], {}, ValueError, r"readings\[0\].label 'maybe' is not positive, negative or uncertain"),
        (lambda make: [make()], [FindingReading("cardiomegaly", Label.POSITIVE, side="left")], {}, ValueError, r"readings\[0\].side 'left' is not one cardiomegaly can have \(none\)"),
        (lambda make: [make()], [FindingReading("pneumothorax", Label.POSITIVE, side="bilateral")], {}, ValueError, r"readings\[0\].side 'bilateral' is not one pneumothorax can have \(left, right\)"),
        (lambda make: [make()], [FindingReading("consolidation", Label.POSITIVE, lobe="lingula")], {}, ValueError, r"readings\[0\].lobe 'lingula' is not one consolidation can have"),
        (lambda make: [make()], READINGS, {"series_number": 0}, ValueError, "series_number must be a positive integer"),
        (lambda make: [make()], READINGS, {"sop_instance_uid": "1.2.abc"}, ValueError, "sop_instance_uid '1.2.abc' is not a valid"),
        (lambda make: [make()], READINGS, {"corrects": "1.2.3"}, TypeError, "corrects must be a PreviousSR, got str"),
    ],
)  # fmt: skip
def test_bad_input_is_refused_naming_the_argument(
    sources: Callable[[MakeImage], object],
    readings: object,
    options: dict,
    error: type,
    message: str,
    model: ModelIdentity,
    make_image: MakeImage,
) -> None:
    with pytest.raises(error, match=message):
        build_air_sr(sources(make_image), readings, model, **options)  # type: ignore[arg-type]


def test_a_corrects_of_another_study_is_refused(image: Dataset, model: ModelIdentity) -> None:
    with pytest.raises(ValueError, match="corrects names an SR of another study"):
        build_air_sr([image], READINGS, model, corrects=previous_of(image, study_instance_uid="1.2.3.4"))


def test_model_must_be_a_model_identity(image: Dataset) -> None:
    with pytest.raises(TypeError, match="model must be a ModelIdentity"):
        build_air_sr([image], READINGS, "echo-student")  # type: ignore[arg-type]


# --- the code table -----------------------------------------------------------------------------


def test_the_code_table_covers_every_class_label_side_and_lobe() -> None:
    assert set(FINDING_CODES) == set(FINDINGS)
    assert len({code.value for code in FINDING_CODES.values()}) == len(FINDINGS)
    assert set(PRESENCE_CODES) == set(Label)
    assert PRESENCE_CODES[Label.POSITIVE] == codes.SCT.Present
    assert set(LOBE_SITES) == set(LOBES)
    with_side = {finding for finding, attributes in ATTRIBUTES.items() if "side" in attributes}
    assert set(SIDE_SITES) == with_side
    assert all(code.scheme_designator == "SCT" for code in FINDING_CODES.values())
