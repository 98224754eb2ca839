"""The identity frozen with a draft: what is kept, what is compared, and malformed values that must
not stop a report from being frozen."""

from __future__ import annotations

import pytest
from pydicom import Dataset
from pydicom.dataelem import RawDataElement
from pydicom.tag import Tag

from node.delivery.identity import (
    IdentityError,
    compare_with_spool,
    freeze_identity,
    thawed_header,
)


def test_the_frozen_header_keeps_patient_study_and_order_but_no_pixels_or_private_data(images) -> None:
    image = images.chest(patient_id="MRN-1", accession="ACC-1")
    image.add_new(0x00091010, "LO", "private vendor data")
    identity = freeze_identity(image)
    header = thawed_header(identity)
    assert (header.PatientID, header.AccessionNumber, header.StudyInstanceUID) == (
        "MRN-1",
        "ACC-1",
        image.StudyInstanceUID,
    )
    assert "PixelData" not in header and "Rows" not in header and 0x00091010 not in header
    assert identity["key"]["SOPInstanceUID"] == image.SOPInstanceUID


def test_a_spool_copy_naming_another_patient_disagrees_by_attribute_name_only(images) -> None:
    image = images.chest(patient_id="MRN-1", accession="ACC-1")
    identity = freeze_identity(image)
    assert compare_with_spool(identity, image) is None
    other = images.chest(patient_id="MRN-2", accession="ACC-2")
    other.SOPInstanceUID, other.StudyInstanceUID = image.SOPInstanceUID, image.StudyInstanceUID
    other.SeriesInstanceUID = image.SeriesInstanceUID
    disagreement = compare_with_spool(identity, other)
    assert disagreement is not None
    assert disagreement.attributes == ("PatientID", "AccessionNumber")
    assert "MRN" not in str(disagreement) and "ACC" not in str(disagreement)


def test_malformed_values_are_left_out_not_fatal(images) -> None:
    image = images.chest()
    image[0x00101030] = RawDataElement(Tag(0x00101030), "DS", 5, b"heavy", 0, False, True)
    image[0x00200013] = RawDataElement(Tag(0x00200013), "IS", 2, b"x1", 0, False, True)
    identity = freeze_identity(image)
    assert identity["dropped"] == ["InstanceNumber", "PatientWeight"]
    assert thawed_header(identity).PatientID == image.PatientID


@pytest.mark.parametrize(
    ("identity", "message"),
    [
        (None, "no frozen identity"),
        ({"format": 99, "header": {}}, "unknown format 99"),
    ],
)
def test_a_missing_or_foreign_identity_is_refused_clearly(identity, message) -> None:
    with pytest.raises(IdentityError, match=message):
        thawed_header(identity)


def test_an_image_without_its_uids_cannot_be_frozen() -> None:
    with pytest.raises(IdentityError, match="no StudyInstanceUID"):
        freeze_identity(Dataset())
