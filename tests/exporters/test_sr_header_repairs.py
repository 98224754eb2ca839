"""Issue 15 #17: a malformed optional header value never loses the SR; it is repaired or dropped, and
`sanitize_source` says what it did, in notes that name the attribute but never quote the value."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from pydicom import Dataset, dcmread

from exporters.identity import ModelIdentity
from exporters.sanitize import sanitize_source
from exporters.sr import build_sr

FINDINGS = "Heart size is normal."
IMPRESSION = "No acute cardiopulmonary process."
MakeImage = Callable[..., Dataset]

# (attribute, value as received, value in the SR, the one note)
CASES = [
    ("PatientBirthDate", "19xx0101", "", "PatientBirthDate: not a valid date (DA, YYYYMMDD); dropped"),
    ("PatientBirthDate", "2023-13-45", "", "PatientBirthDate: not a valid date (DA, YYYYMMDD); dropped"),
    ("PatientBirthDate", "1970-01-31", "19700131", "PatientBirthDate: a date written with separators; rewritten as YYYYMMDD"),
    ("PatientSex", "Male", "M", "PatientSex: not one of the codes M, F or O; rewritten as the code"),
    ("PatientSex", "female", "F", "PatientSex: not one of the codes M, F or O; rewritten as the code"),
    ("PatientSex", "X", "", "PatientSex: not one of the codes M, F or O; dropped"),
    ("StudyDate", "garbage", "", "StudyDate: not a valid date (DA, YYYYMMDD); dropped"),
    ("StudyTime", "25:61", "", "StudyTime: not a valid time (TM, HHMMSS); dropped"),
    ("StudyTime", "10:30:15", "103015", "StudyTime: a time written with colons; rewritten as HHMMSS"),
    ("PatientName", "O\\Brien^Pat", "O Brien^Pat", "PatientName: 2 values where DICOM allows 1 (a backslash in the text); joined with spaces"),
    ("PatientName", "Doe^Jane^Q^Dr^Jr^III", "Doe^Jane^Q^Dr^Jr III", "PatientName: more than 5 name components; the extra components joined to the fifth"),
    ("PatientName", "D" * 70 + "^Jane", "D" * 59 + "^Jane", "PatientName: longer than the 64 characters PN allows; longest components shortened to 64 characters"),
    ("AccessionNumber", "A" * 65, "", "AccessionNumber: longer than the 16 characters SH allows (an identifier is never altered); dropped"),
    ("StudyDescription", "XR CHEST PA " * 6, ("XR CHEST PA " * 6)[:64].rstrip(), "StudyDescription: longer than the 64 characters LO allows; truncated to 64 characters"),
    ("ReferringPhysicianName", "Who^Doc\ttor", "Who^Doc tor", "ReferringPhysicianName: control characters; replaced with spaces"),
    ("PatientAge", "abc", "", "PatientAge: not a valid age (AS, nnnD/W/M/Y); dropped"),
]  # fmt: skip
IDS = [f"{keyword}={value[:12]!r}" for keyword, value, _, _ in CASES]


@pytest.mark.parametrize(("keyword", "value", "repaired", "note"), CASES, ids=IDS)
def test_sanitize_source_repairs_or_drops_the_value_and_says_so(
    keyword: str, value: str, repaired: str, note: str, make_received_image: MakeImage
) -> None:
    received = make_received_image(**{keyword: value})

    clean, notes = sanitize_source(received)

    assert notes == [note]
    assert str(clean[keyword].value or "") == repaired
    assert "PixelData" not in clean and "PixelData" in received
    if len(value) > 3:
        assert value not in " ".join(notes)  # a note never quotes the header value


@pytest.mark.parametrize(("keyword", "value", "repaired", "note"), CASES, ids=IDS)
def test_build_sr_alone_survives_the_value(
    keyword: str, value: str, repaired: str, note: str, make_received_image: MakeImage, model: ModelIdentity
) -> None:
    """build_sr without a sanitize_source first: it used to raise (highdicom refused the value)."""
    received = make_received_image(**{keyword: value})

    sr = build_sr([received], FINDINGS, IMPRESSION, model)

    assert str(sr[keyword].value or "") == repaired
    assert sr.PatientID == received.PatientID and sr.StudyInstanceUID == received.StudyInstanceUID


def test_an_accession_number_too_long_for_dicom_leaves_the_sr_without_a_request(
    make_received_image: MakeImage, model: ModelIdentity
) -> None:
    sr = build_sr([make_received_image(AccessionNumber="A" * 65)], FINDINGS, IMPRESSION, model)

    assert sr.AccessionNumber == ""
    assert "ReferencedRequestSequence" not in sr


def test_values_inside_sequences_are_checked_and_named_with_their_path(
    make_received_image: MakeImage, model: ModelIdentity
) -> None:
    request = Dataset()
    request.RequestedProcedureID = "RP42"
    request.RequestedProcedureDescription = "CHEST " * 20
    received = make_received_image(RequestAttributesSequence=[request])

    clean, notes = sanitize_source(received)
    sr = build_sr([received], FINDINGS, IMPRESSION, model)

    assert notes == [
        "RequestAttributesSequence[0].RequestedProcedureDescription: "
        "longer than the 64 characters LO allows; truncated to 64 characters"
    ]
    assert len(sr.ReferencedRequestSequence[0].RequestedProcedureDescription) <= 64
    assert request.RequestedProcedureDescription == "CHEST " * 20  # the caller's item untouched


def test_the_patient_id_is_never_altered_even_when_dicom_would_not_allow_it(
    make_received_image: MakeImage, model: ModelIdentity
) -> None:
    long_id = "P" * 70
    received = make_received_image(PatientID=long_id, IssuerOfPatientID="I" * 70)

    clean, notes = sanitize_source(received)
    sr = build_sr([received], FINDINGS, IMPRESSION, model)

    assert notes == []
    assert clean.PatientID == sr.PatientID == long_id
    assert clean.IssuerOfPatientID == sr.IssuerOfPatientID == "I" * 70


def test_every_optional_value_malformed_at_once_still_gives_an_sr(
    make_received_image: MakeImage, model: ModelIdentity
) -> None:
    last_case = {keyword: (value, repaired) for keyword, value, repaired, _ in CASES}
    received = make_received_image(**{keyword: value for keyword, (value, _) in last_case.items()})

    clean, notes = sanitize_source(received)
    sr = build_sr([received], FINDINGS, IMPRESSION, model)

    assert sorted(note.split(":")[0] for note in notes) == sorted(last_case)
    assert {keyword: str(sr[keyword].value or "") for keyword in last_case} == {
        keyword: repaired for keyword, (_, repaired) in last_case.items()
    }


def test_sanitize_source_leaves_the_callers_dataset_as_it_was(make_received_image: MakeImage) -> None:
    received = make_received_image(PatientSex="Male", PatientName="O\\Brien^Pat")
    before = received.to_json_dict()

    clean, _ = sanitize_source(received)
    clean.PatientID = "CHANGED"

    assert received.to_json_dict() == before
    assert clean.file_meta.TransferSyntaxUID == received.file_meta.TransferSyntaxUID


def test_a_valid_header_passes_unchanged(image: Dataset) -> None:
    clean, notes = sanitize_source(image)

    assert notes == []
    assert {element.keyword for element in clean} == {
        element.keyword for element in image if element.keyword != "PixelData"
    }


def test_sanitize_source_refuses_what_is_not_a_dataset() -> None:
    with pytest.raises(TypeError, match="dataset must be a pydicom Dataset, got dict"):
        sanitize_source({"PatientID": "1"})  # type: ignore[arg-type]


@pytest.mark.integration
@pytest.mark.parametrize(("keyword", "value", "repaired", "note"), CASES, ids=IDS)
def test_the_repaired_sr_passes_dciodvfy(
    keyword: str,
    value: str,
    repaired: str,
    note: str,
    make_received_image: MakeImage,
    model: ModelIdentity,
    tmp_path: Path,
) -> None:
    sr = build_sr([make_received_image(**{keyword: value})], FINDINGS, IMPRESSION, model)
    path = tmp_path / "report.dcm"
    sr.save_as(path, enforce_file_format=True)

    result = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, check=False)

    lines = (result.stdout + result.stderr).splitlines()
    assert "ComprehensiveSR" in lines
    assert [line for line in lines if line.startswith("Error")] == []
    assert str(dcmread(path)[keyword].value or "") == repaired
