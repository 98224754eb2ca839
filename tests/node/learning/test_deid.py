"""De-identification (PS3.15 basic profile): nothing of the patient left in the file, the pixels kept,
pseudonyms stable under the site secret, report text rid of what the header names."""

from __future__ import annotations

import io
import stat
from pathlib import Path
from types import SimpleNamespace

import pytest
from pydicom import dcmread
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from node.learning.deid import (
    EMPTIED,
    REMOVED,
    Deidentifier,
    burned_in,
    header_identifiers,
    scrub_text,
    site_secret,
)

SECRET = bytes(range(32))


def identified(dicom: SimpleNamespace) -> Dataset:
    """A chest image carrying the identifying attributes a site's CR headers do."""
    image = dicom.chest_image(accession="ACC-777")
    image.PatientBirthDate = "19610304"
    image.PatientSex = "F"
    image.PatientAge = "063Y"
    image.OtherPatientIDs = "OTHER-ID-55"
    image.InstitutionName = "Saint Example Hospital"
    image.ReferringPhysicianName = "Referrer^Robert"
    image.OperatorsName = "Tech^Tina"
    image.StudyDescription = "XR CHEST PA for Jane"
    image.SeriesDate = "20250102"
    image.StudyTime = "101500"
    image.StationName = "XR-ROOM-7"
    image.FrameOfReferenceUID = "1.2.3.4.5.6.7"
    image.BurnedInAnnotation = "NO"
    referenced = Dataset()
    referenced.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"
    referenced.ReferencedSOPInstanceUID = "1.2.3.4.5.99"
    image.ReferencedStudySequence = Sequence([referenced])
    request = Dataset()
    request.RequestedProcedureID = "REQ-12345"
    request.ScheduledProcedureStepID = "SPS-12345"
    image.RequestAttributesSequence = Sequence([request])
    block = image.private_block(0x0029, "SITE PRIVATE", create=True)
    block.add_new(0x01, "LO", "PRIVATE-PATIENT-NOTE")
    image.add_new(0x60000010, "US", 64)
    image.add_new(0x60003000, "OW", b"\x00" * 512)
    return image


def originals(image: Dataset) -> list[str]:
    return [
        "Doe",
        "Jane",
        "MRN-SECRET-0042",
        "ACC-777",
        "19610304",
        "20250102",
        "OTHER-ID-55",
        "Saint Example",
        "Referrer",
        "Tech^Tina",
        "XR-ROOM-7",
        "REQ-12345",
        "PRIVATE-PATIENT-NOTE",
        image.StudyInstanceUID,
        image.SeriesInstanceUID,
        image.SOPInstanceUID,
        "1.2.3.4.5.6.7",
        "1.2.3.4.5.99",
    ]


def written(dataset: Dataset) -> bytes:
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def test_nothing_of_the_patient_is_left_in_the_file_and_the_pixels_are_as_they_were(
    dicom: SimpleNamespace,
) -> None:
    image = identified(dicom)
    source = dcmread(io.BytesIO(dicom.part10(image)))
    pixels, secrets_ = source.PixelData, originals(source)

    clean = Deidentifier(SECRET)(source)
    encoded = written(clean)

    for value in secrets_:
        assert value.encode() not in encoded, value
    back = dcmread(io.BytesIO(encoded))
    assert back.PixelData == pixels
    assert back.pixel_array.shape == (64, 64)
    assert back.PatientIdentityRemoved == "YES"
    assert back.LongitudinalTemporalInformationModified == "MODIFIED"
    assert [item.CodeValue for item in back.DeidentificationMethodCodeSequence] == ["113100", "113107"]
    assert back.PatientID and back.AccessionNumber and back.PatientName  # pseudonyms, not blanks
    assert back.PatientBirthDate == "" and back.PatientSex == ""
    assert "StudyDescription" not in back and "InstitutionName" not in back
    assert "RequestAttributesSequence" not in back and "ReferencedStudySequence" not in back
    assert (
        back.SOPClassUID == image.SOPClassUID
        and back.file_meta.MediaStorageSOPInstanceUID == back.SOPInstanceUID
    )
    assert back.StudyDate != "" and back.StudyDate < "20250102"  # shifted back, kept in order
    assert (back.Modality, back.ViewPosition, back.BodyPartExamined) == ("CR", "PA", "CHEST")


def test_pseudonyms_are_stable_under_one_secret_and_differ_under_another(dicom: SimpleNamespace) -> None:
    image = identified(dicom)

    def clean(secret: bytes) -> Dataset:
        return Deidentifier(secret)(dcmread(io.BytesIO(dicom.part10(image))))

    first, again, other = clean(SECRET), clean(SECRET), clean(bytes(32))
    keys = ("PatientID", "PatientName", "AccessionNumber", "StudyInstanceUID", "SOPInstanceUID", "StudyDate")
    assert [str(first.get(key)) for key in keys] == [str(again.get(key)) for key in keys]
    assert all(str(first.get(key)) != str(other.get(key)) for key in keys)


def test_every_attribute_the_profile_names_is_one_pydicom_knows() -> None:
    unknown = [keyword for keyword in (*REMOVED, *EMPTIED) if tag_for_keyword(keyword) is None]
    assert unknown == []


def test_the_site_secret_is_made_once_and_readable_by_the_node_only(tmp_path: Path) -> None:
    secret = site_secret(tmp_path / "data")
    assert len(secret) == 32 and site_secret(tmp_path / "data") == secret
    mode = (tmp_path / "data" / "site-secret").stat().st_mode
    assert stat.S_IMODE(mode) == 0o600
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "site-secret").write_text("short")
    with pytest.raises(ValueError, match="not a site secret"):
        site_secret(tmp_path / "bad")


def test_report_text_loses_the_ids_the_name_and_dates_the_header_names(dicom: SimpleNamespace) -> None:
    image = identified(dicom)
    text = (
        "Jane Doe, MRN-SECRET-0042: small left effusion, new since 03/04/2024 (ACC-777). "
        "DOE, JANE discussed with Dr. Referrer. Heart size normal."
    )
    scrubbed = scrub_text(text, header_identifiers(image))
    assert scrubbed == (
        "[removed], [removed]: small left effusion, new since [date] ([removed]). "
        "[removed] discussed with Dr. Referrer. Heart size normal."
    )
    assert (
        scrub_text("Lungs clear. 5 mm nodule, 1.5 cm mass.", ["Doe"])
        == "Lungs clear. 5 mm nodule, 1.5 cm mass."
    )


@pytest.mark.parametrize(("value", "expected"), [("YES", True), ("NO", False), ("", False), (None, False)])
def test_burned_in_annotation_yes_is_what_keeps_an_image_out(
    dicom: SimpleNamespace, value: str | None, expected: bool
) -> None:
    image = dicom.chest_image()
    if value is not None:
        image.BurnedInAnnotation = value
    assert burned_in(image) is expected
