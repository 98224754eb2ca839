"""ModelIdentity, the derived device UID, and StudyInfo read from an image header."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import pytest
from pydicom import Dataset

from exporters.identity import ModelIdentity, derive_device_uid, is_valid_uid, study_info_from_dataset

MakeImage = Callable[..., Dataset]


def test_device_uid_is_a_pure_function_of_name_and_version() -> None:
    uid = derive_device_uid("echo-student", "1.2.0")

    assert uid == derive_device_uid("echo-student", "1.2.0")
    assert uid != derive_device_uid("echo-student", "1.2.1")
    assert uid != derive_device_uid("echo-student1.", "2.0")
    assert uid.startswith("2.25.") and is_valid_uid(uid)


def test_a_given_device_uid_wins() -> None:
    assert ModelIdentity("echo", "1", "ECHO", device_uid="1.2.3").uid == "1.2.3"
    assert ModelIdentity("echo", "1", "ECHO").uid == derive_device_uid("echo", "1")


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (("", "1", "ECHO"), "ModelIdentity.name must be a non-empty string"),
        (("echo", " ", "ECHO"), "ModelIdentity.version must be a non-empty string"),
        (("echo", "1", None), "ModelIdentity.manufacturer must be a non-empty string"),
        (("echo", "1", "ECHO", "1.02.3"), "ModelIdentity.device_uid '1.02.3' is not a valid DICOM UID"),
    ],
)
def test_bad_identity_is_refused(arguments: tuple, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ModelIdentity(*arguments)


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        ("1.2.840.10008.1.1", True),
        ("0.1", True),
        ("1.02", False),
        ("1..2", False),
        ("1.2.", False),
        ("1." + "1" * 63, False),
    ],
)
def test_uid_syntax(value: str, valid: bool) -> None:
    assert is_valid_uid(value) is valid


def test_study_info_comes_from_the_image_header(make_image: MakeImage) -> None:
    image = make_image(PlacerOrderNumberImagingServiceRequest="PL-1", IssuerOfPatientID="GENERAL")
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = "36554-4", "LN", "XR Chest PA"
    image.RequestAttributesSequence[0].RequestedProcedureCodeSequence = [code]
    image.RequestAttributesSequence[0].FillerOrderNumberImagingServiceRequest = "FI-1"

    info = study_info_from_dataset(image)

    assert (info.patient_id, info.patient_name, info.birth_date, info.sex) == (
        "MRN0042",
        "Doe^Jane",
        "19700101",
        "F",
    )
    assert (info.accession_number, info.study_instance_uid) == ("ACC0042", image.StudyInstanceUID)
    assert (info.placer_order_number, info.filler_order_number) == ("PL-1", "FI-1")
    assert (info.procedure_code, info.procedure_coding_scheme, info.procedure_description) == (
        "36554-4",
        "LN",
        "XR Chest PA",
    )
    assert info.observation_datetime == datetime(2025, 1, 2, 3, 4, 5)
    assert info.patient_id_issuer == "GENERAL"


def test_study_info_falls_back_to_acquisition_time_and_study_description(make_image: MakeImage) -> None:
    image = make_image(StudyDate=None, StudyTime=None, AcquisitionDateTime="20250102101112.5+0100")

    info = study_info_from_dataset(image)

    assert info.observation_datetime == datetime(2025, 1, 2, 10, 11, 12, 500000)
    assert info.procedure_code is None and info.procedure_description == "XR CHEST PA"
    assert (info.placer_order_number, info.filler_order_number) == (None, None)


def test_study_info_without_any_time_has_none(make_image: MakeImage) -> None:
    assert study_info_from_dataset(make_image(StudyDate=None)).observation_datetime is None
