"""build_sr: the TID 2000 tree, the flags, patient/study/order copied from the source, and refusals."""

from __future__ import annotations

import dataclasses
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from pydicom import Dataset, dcmread
from pydicom.uid import ComprehensiveSRStorage

from exporters.identity import ModelIdentity, derive_device_uid
from exporters.sr import PreviousSR, build_sr

FINDINGS = "Heart size is normal.\nNo pleural effusion."
IMPRESSION = "No acute cardiopulmonary process."
MakeImage = Callable[..., Dataset]


def concept(item: Dataset) -> tuple[str, str]:
    code = item.ConceptNameCodeSequence[0]
    return code.CodeValue, code.CodingSchemeDesignator


def children(item: Dataset, value_type: str | None = None) -> list[Dataset]:
    return [child for child in item.ContentSequence if value_type in (None, child.ValueType)]


def container(sr: Dataset, code_value: str) -> Dataset:
    (found,) = [item for item in children(sr, "CONTAINER") if concept(item)[0] == code_value]
    return found


def test_root_is_tid_2000_with_language_and_device_observer(image: Dataset, model: ModelIdentity) -> None:
    sr = build_sr([image], FINDINGS, IMPRESSION, model)

    assert concept(sr) == ("18748-4", "LN")
    assert sr.ContentTemplateSequence[0].TemplateIdentifier == "2000"
    assert sr.ContentTemplateSequence[0].MappingResource == "DCMR"
    (language,) = [item for item in children(sr) if concept(item) == ("121049", "DCM")]
    assert language.RelationshipType == "HAS CONCEPT MOD"
    assert language.ConceptCodeSequence[0].CodeValue == "en-US"
    assert language.ConceptCodeSequence[0].CodingSchemeDesignator == "RFC5646"
    context = {concept(item)[0]: item for item in children(sr) if item.RelationshipType == "HAS OBS CONTEXT"}
    assert context["121005"].ConceptCodeSequence[0].CodeValue == "121007"  # observer type: Device
    assert context["121012"].UID == derive_device_uid("echo-student", "1.2.0") == model.uid
    assert context["121013"].TextValue == "echo-student"
    assert context["121014"].TextValue == "ECHO Project"
    assert context["121015"].TextValue == "echo-student 1.2.0"


def test_findings_and_impressions_hold_one_text_item_per_line_and_the_image(
    image: Dataset, model: ModelIdentity
) -> None:
    sr = build_sr([image], FINDINGS + "\n\n", "  " + IMPRESSION, model)

    findings = container(sr, "121070")
    assert [(concept(item), item.TextValue) for item in children(findings, "TEXT")] == [
        (("121071", "DCM"), "Heart size is normal."),
        (("121071", "DCM"), "No pleural effusion."),
    ]
    (reference,) = children(findings, "IMAGE")
    assert concept(reference) == ("121080", "DCM")
    assert reference.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == image.SOPInstanceUID
    assert reference.ReferencedSOPSequence[0].ReferencedSOPClassUID == image.SOPClassUID
    impressions = container(sr, "121072")
    assert [(concept(item), item.TextValue) for item in children(impressions)] == [
        (("121073", "DCM"), IMPRESSION)
    ]


def test_flags_say_partial_unverified_preliminary(image: Dataset, model: ModelIdentity) -> None:
    draft = build_sr([image], FINDINGS, IMPRESSION, model)
    complete = build_sr([image], FINDINGS, IMPRESSION, model, completion="COMPLETE")

    assert (draft.CompletionFlag, draft.VerificationFlag, draft.PreliminaryFlag) == (
        "PARTIAL",
        "UNVERIFIED",
        "PRELIMINARY",
    )
    assert (complete.CompletionFlag, complete.VerificationFlag, complete.PreliminaryFlag) == (
        "COMPLETE",
        "UNVERIFIED",
        "PRELIMINARY",
    )


def test_same_patient_and_study_in_a_new_sr_series(image: Dataset, model: ModelIdentity) -> None:
    sr = build_sr([image], FINDINGS, IMPRESSION, model, series_number=77, instance_number=3)

    for keyword in ("PatientID", "PatientName", "PatientBirthDate", "PatientSex", "StudyInstanceUID"):
        assert sr[keyword].value == image[keyword].value, keyword
    assert sr.AccessionNumber == "ACC0042"
    assert sr.SOPClassUID == ComprehensiveSRStorage
    assert sr.Modality == "SR"
    assert sr.SeriesInstanceUID != image.SeriesInstanceUID
    assert (sr.SeriesNumber, sr.InstanceNumber) == (77, 3)
    assert (sr.Manufacturer, sr.ManufacturerModelName, sr.SoftwareVersions) == (
        "ECHO Project",
        "echo-student",
        "1.2.0",
    )
    evidence = sr.CurrentRequestedProcedureEvidenceSequence[0]
    assert evidence.StudyInstanceUID == image.StudyInstanceUID
    assert evidence.ReferencedSeriesSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == (
        image.SOPInstanceUID
    )


def test_referenced_request_carries_accession_and_requested_procedure(
    image: Dataset, model: ModelIdentity
) -> None:
    sr = build_sr([image], FINDINGS, IMPRESSION, model)

    (request,) = sr.ReferencedRequestSequence
    assert request.AccessionNumber == "ACC0042"
    assert request.RequestedProcedureID == "RP42"
    assert request.StudyInstanceUID == image.StudyInstanceUID


def test_unscheduled_study_gets_no_referenced_request(model: ModelIdentity, make_image: MakeImage) -> None:
    sr = build_sr([make_image(AccessionNumber="")], FINDINGS, IMPRESSION, model)

    assert "ReferencedRequestSequence" not in sr


def test_absent_type2_attributes_are_sent_empty_and_the_source_is_untouched(
    model: ModelIdentity, make_image: MakeImage
) -> None:
    source = make_image(PatientBirthDate=None, StudyID=None)
    before = {element.keyword for element in source}

    sr = build_sr([source], FINDINGS, IMPRESSION, model)

    assert sr.PatientBirthDate == "" and sr.StudyID == ""
    assert {element.keyword for element in source} == before
    assert "PixelData" not in sr


def test_every_source_image_is_referenced(model: ModelIdentity, make_image: MakeImage) -> None:
    frontal = make_image()
    lateral = make_image(StudyInstanceUID=frontal.StudyInstanceUID, ViewPosition="LL")

    sr = build_sr([frontal, lateral], FINDINGS, IMPRESSION, model)

    referenced = {
        item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID
        for item in children(container(sr, "121070"), "IMAGE")
    }
    assert referenced == {frontal.SOPInstanceUID, lateral.SOPInstanceUID}


def test_an_empty_impression_leaves_its_section_out(image: Dataset, model: ModelIdentity) -> None:
    sr = build_sr([image], FINDINGS, " \n", model)

    assert [concept(item)[0] for item in children(sr, "CONTAINER")] == ["121070"]


def test_given_uids_are_used_so_a_resend_replaces(image: Dataset, model: ModelIdentity) -> None:
    sr = build_sr(
        [image], FINDINGS, IMPRESSION, model, series_instance_uid="1.2.3.4", sop_instance_uid="1.2.3.4.5"
    )

    assert (sr.SeriesInstanceUID, sr.SOPInstanceUID) == ("1.2.3.4", "1.2.3.4.5")


@pytest.mark.parametrize(
    ("sources", "findings", "impression", "options", "error", "message"),
    [
        (lambda make: [], FINDINGS, IMPRESSION, {}, ValueError, "source is empty"),
        (lambda make: make(), FINDINGS, IMPRESSION, {}, TypeError, "source must be a sequence"),
        (lambda make: ["not a dataset"], FINDINGS, IMPRESSION, {}, TypeError, r"source\[0\] must be a pydicom Dataset"),
        (lambda make: [make(StudyInstanceUID=None)], FINDINGS, IMPRESSION, {}, ValueError, r"source\[0\] has no StudyInstanceUID"),
        (lambda make: [make(SOPInstanceUID="")], FINDINGS, IMPRESSION, {}, ValueError, r"source\[0\] has no SOPInstanceUID"),
        (lambda make: [make(), make()], FINDINGS, IMPRESSION, {}, ValueError, r"source\[1\] is from a different study"),
        (lambda make: [make()], " ", "\n", {}, ValueError, "findings and impression are both empty"),
        (lambda make: [make()], None, IMPRESSION, {}, TypeError, "findings must be a string"),
        (lambda make: [make()], FINDINGS, IMPRESSION, {"completion": "DONE"}, ValueError, "completion must be PARTIAL or COMPLETE"),
        (lambda make: [make()], FINDINGS, IMPRESSION, {"language": "English"}, ValueError, "language must be an RFC 5646 tag"),
        (lambda make: [make()], FINDINGS, IMPRESSION, {"series_number": 0}, ValueError, "series_number must be a positive integer"),
        (lambda make: [make()], FINDINGS, IMPRESSION, {"instance_number": "1"}, ValueError, "instance_number must be a positive"),
        (lambda make: [make()], FINDINGS, IMPRESSION, {"sop_instance_uid": "1.2.abc"}, ValueError, "sop_instance_uid '1.2.abc' is not a valid"),
    ],
)  # fmt: skip
def test_bad_input_is_refused_naming_the_argument(
    sources: Callable[[MakeImage], object],
    findings: object,
    impression: object,
    options: dict,
    error: type,
    message: str,
    model: ModelIdentity,
    make_image: MakeImage,
) -> None:
    with pytest.raises(error, match=message):
        build_sr(sources(make_image), findings, impression, model, **options)  # type: ignore[arg-type]


def test_sources_of_two_patients_are_refused(model: ModelIdentity, make_image: MakeImage) -> None:
    first = make_image()
    other_patient = make_image(StudyInstanceUID=first.StudyInstanceUID, PatientID="MRN9999")

    with pytest.raises(ValueError, match=r"source\[1\] has a different PatientID"):
        build_sr([first, other_patient], FINDINGS, IMPRESSION, model)


def test_model_must_be_a_model_identity(image: Dataset) -> None:
    with pytest.raises(TypeError, match="model must be a ModelIdentity"):
        build_sr([image], FINDINGS, IMPRESSION, "echo-student")  # type: ignore[arg-type]


# --- the SR as other tools read it ---------------------------------------------------------------


def write_sr(sr: Dataset, folder: Path) -> Path:
    path = folder / "report.dcm"
    sr.save_as(path, enforce_file_format=True)
    return path


@pytest.mark.integration
@pytest.mark.parametrize("accession", ["ACC0042", ""])
def test_dciodvfy_finds_no_errors(
    accession: str, model: ModelIdentity, make_image: MakeImage, tmp_path: Path
) -> None:
    path = write_sr(build_sr([make_image(AccessionNumber=accession)], FINDINGS, IMPRESSION, model), tmp_path)

    result = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, check=False)

    lines = (result.stdout + result.stderr).splitlines()
    assert "ComprehensiveSR" in lines
    assert [line for line in lines if line.startswith("Error")] == []
    assert [line for line in lines if line.startswith("Warning")] == []


@pytest.mark.integration
def test_dciodvfy_catches_a_broken_sr(image: Dataset, model: ModelIdentity, tmp_path: Path) -> None:
    """The check above can fail: the same SR without its Completion Flag is an error to dciodvfy."""
    sr = build_sr([image], FINDINGS, IMPRESSION, model)
    del sr.CompletionFlag
    path = write_sr(sr, tmp_path)

    result = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, check=False)

    assert any(line.startswith("Error") and "CompletionFlag" in line for line in result.stderr.splitlines())


@pytest.mark.integration
def test_dsrdump_reads_the_tree(image: Dataset, model: ModelIdentity, tmp_path: Path) -> None:
    path = write_sr(build_sr([image], "Heart size is normal.", IMPRESSION, model), tmp_path)

    result = subprocess.run(["dsrdump", "+Pl", str(path)], capture_output=True, text=True, check=False)

    assert result.returncode == 0 and result.stderr == ""
    assert "Comprehensive SR Document" in result.stdout
    assert '<CONTAINER:(,,"Diagnostic Imaging Report")=SEPARATE>' in result.stdout
    assert '<contains TEXT:(,,"Finding")="Heart size is normal.">' in result.stdout
    assert f'<contains TEXT:(,,"Impression")="{IMPRESSION}">' in result.stdout
    assert "Verification Flag   : UNVERIFIED" in result.stdout


def test_the_saved_sr_reads_back_with_pydicom(image: Dataset, model: ModelIdentity, tmp_path: Path) -> None:
    sr = build_sr([image], FINDINGS, IMPRESSION, model)

    again = dcmread(write_sr(sr, tmp_path))

    assert again.SOPInstanceUID == sr.SOPInstanceUID
    assert again.file_meta.MediaStorageSOPClassUID == ComprehensiveSRStorage


def test_non_ascii_text_switches_the_sr_to_utf8(
    make_image: MakeImage, model: ModelIdentity, tmp_path: Path
) -> None:
    latin = make_image(SpecificCharacterSet="ISO_IR 100", PatientName="Müller^Jörg")
    ascii_sr = build_sr([latin], FINDINGS, IMPRESSION, model)
    utf8_sr = build_sr([latin], "Nodule ≥ 5 mm, größer als zuvor.", IMPRESSION, model)

    again = dcmread(write_sr(utf8_sr, tmp_path))

    assert ascii_sr.SpecificCharacterSet == "ISO_IR 100"
    assert again.SpecificCharacterSet == "ISO_IR 192"
    assert str(again.PatientName) == "Müller^Jörg"
    assert container(again, "121070").ContentSequence[0].TextValue == "Nodule ≥ 5 mm, größer als zuvor."


# --- a corrected draft: a new SR naming the one it replaces -----------------------------------------


def previous_of(image: Dataset, **changes: str) -> PreviousSR:
    fields = {
        "study_instance_uid": image.StudyInstanceUID,
        "series_instance_uid": "1.2.826.0.1.3680043.8.498.11",
        "sop_instance_uid": "1.2.826.0.1.3680043.8.498.12",
        **changes,
    }
    return PreviousSR(**fields)


def test_a_corrected_draft_names_the_sr_it_replaces(image: Dataset, model: ModelIdentity) -> None:
    previous = previous_of(image)
    sr = build_sr(
        [image],
        FINDINGS,
        IMPRESSION,
        model,
        sop_instance_uid="1.2.826.0.1.3680043.8.498.13",
        corrects=previous,
    )

    (study,) = sr.PredecessorDocumentsSequence
    assert study.StudyInstanceUID == image.StudyInstanceUID
    (series,) = study.ReferencedSeriesSequence
    assert series.SeriesInstanceUID == previous.series_instance_uid
    (instance,) = series.ReferencedSOPSequence
    assert instance.ReferencedSOPInstanceUID == previous.sop_instance_uid
    assert instance.ReferencedSOPClassUID == ComprehensiveSRStorage
    assert sr.SOPInstanceUID != previous.sop_instance_uid
    # still a draft: a correction of a preliminary is a preliminary
    assert (sr.CompletionFlag, sr.VerificationFlag, sr.PreliminaryFlag) == (
        "PARTIAL",
        "UNVERIFIED",
        "PRELIMINARY",
    )
    assert "PredecessorDocumentsSequence" not in build_sr([image], FINDINGS, IMPRESSION, model)


@pytest.mark.parametrize(
    ("corrects", "error", "message"),
    [
        (lambda image: "1.2.3", TypeError, "corrects must be a PreviousSR, got str"),
        (lambda image: previous_of(image, sop_instance_uid="1.2.x"), ValueError, r"corrects.sop_instance_uid '1.2.x' is not a valid DICOM UID"),
        (lambda image: previous_of(image, series_instance_uid=""), ValueError, "corrects.series_instance_uid '' is not a valid"),
        (lambda image: previous_of(image, study_instance_uid="1.2.3.4"), ValueError, "corrects names an SR of another study"),
        (lambda image: previous_of(image, sop_instance_uid="1.2.826.0.1.3680043.8.498.13"), ValueError, "corrects names this SR itself"),
    ],
)  # fmt: skip
def test_a_bad_predecessor_is_refused_naming_it(
    corrects: Callable[[Dataset], object], error: type, message: str, image: Dataset, model: ModelIdentity
) -> None:
    with pytest.raises(error, match=message):
        build_sr(
            [image],
            FINDINGS,
            IMPRESSION,
            model,
            sop_instance_uid="1.2.826.0.1.3680043.8.498.13",
            corrects=corrects(image),  # type: ignore[arg-type]
        )


@pytest.mark.integration
def test_dciodvfy_finds_no_errors_in_a_corrected_draft(
    image: Dataset, model: ModelIdentity, tmp_path: Path
) -> None:
    sr = build_sr([image], FINDINGS, IMPRESSION, model, corrects=previous_of(image))
    path = write_sr(sr, tmp_path)

    result = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, check=False)

    lines = (result.stdout + result.stderr).splitlines()
    assert "ComprehensiveSR" in lines
    assert [line for line in lines if line.startswith("Error")] == []
    assert [line for line in lines if line.startswith("Warning")] == []
    dump = subprocess.run(["dcmdump", str(path)], capture_output=True, text=True, check=True).stdout
    assert "(0040,a360)" in dump.lower()  # Predecessor Documents Sequence, as DCMTK reads the file


@pytest.mark.integration
def test_the_decoding_that_wrote_the_draft_is_named_and_dciodvfy_still_passes(
    image: Dataset, model: ModelIdentity, tmp_path: Path
) -> None:
    plain = build_sr([image], FINDINGS, IMPRESSION, model)
    assert not [item for item in plain.ContentSequence if concept(item) == ("111002", "DCM")]
    decoded = dataclasses.replace(model, decoding="refine threshold=0.5")
    sr = build_sr([image], FINDINGS, IMPRESSION, decoded)
    [item] = [item for item in sr.ContentSequence if concept(item) == ("111002", "DCM")]
    assert item.ValueType == "TEXT" and item.TextValue == "refine threshold=0.5"
    assert item.RelationshipType == "HAS CONCEPT MOD"
    result = subprocess.run(
        ["dciodvfy", str(write_sr(sr, tmp_path))], capture_output=True, text=True, check=False
    )
    lines = (result.stdout + result.stderr).splitlines()
    assert [line for line in lines if line.startswith(("Error", "Warning"))] == []
