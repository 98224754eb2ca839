"""Is it a chest radiograph the model may draft? Body part, descriptions and views, decided together."""

from __future__ import annotations

import pytest
from pydicom import Dataset
from pydicom.sequence import Sequence

from node.dicom.chest import (
    LATERAL_ONLY_REASON,
    ImageFacts,
    View,
    decide,
    facts_from_dataset,
    view_of,
)


def cr(body_part: str | None = None, view: str | None = "PA", **descriptions: str) -> ImageFacts:
    return ImageFacts(modality="CR", body_part=body_part, view_position=view, **descriptions)


@pytest.mark.parametrize(
    ("images", "reason"),
    [
        ([cr("CHEST")], "chest radiograph (Body Part Examined CHEST)"),
        ([cr("THORAX")], "chest radiograph (Body Part Examined THORAX)"),
        ([cr("thorax")], "chest radiograph (Body Part Examined THORAX)"),
        ([cr("Chest_PA")], "chest radiograph (Body Part Examined CHEST)"),
        ([cr("TORAX")], "chest radiograph (Body Part Examined TORAX)"),
        ([cr("LUNG")], "chest radiograph (Body Part Examined LUNG)"),
        ([cr(study_description="XR CHEST 2 VIEWS")], "chest radiograph (study description names CHEST)"),
        ([cr(study_description="Rx Tórax PA")], "chest radiograph (study description names TORAX)"),
        ([cr(series_description="CXR portable")], "chest radiograph (series description names CXR)"),
        ([cr(protocol_name="Thorax p.a.")], "chest radiograph (protocol name names THORAX)"),
        # an unrecognised code is outweighed by a description naming the chest
        (
            [cr("PORTABLE", study_description="CHEST PORTABLE")],
            "chest radiograph (study description names CHEST)",
        ),
        # a presentation state sent with it does not take part
        (
            [ImageFacts(modality="PR", study_description="HAND"), cr("CHEST")],
            "chest radiograph (Body Part Examined CHEST)",
        ),
    ],
)
def test_a_chest_is_recognised_from_any_of_its_names(images: list[ImageFacts], reason: str) -> None:
    decision = decide(images)
    assert (decision.draft, decision.reason) == (True, reason)


@pytest.mark.parametrize(
    ("images", "reason"),
    [
        # the reported case: a hand described only in the study description
        ([cr(study_description="XR HAND 3 VIEWS")], "study description names HAND, not CHEST"),
        ([cr("KNEE")], "body part KNEE is not CHEST"),
        ([cr("HAND")], "body part HAND is not CHEST"),
        ([cr("SKULL")], "body part SKULL is not CHEST"),
        ([cr("Schädel")], "body part SKULL is not CHEST"),
        ([cr("ABDOMEN")], "body part ABDOMEN is not CHEST"),
        ([cr("C-SPINE")], "body part CSPINE is not CHEST"),
        ([cr("RIBS")], "body part RIBS is not CHEST"),
        ([cr("CHESTABDOMEN")], "body part CHESTABDOMEN is not CHEST"),
        ([cr("ARM")], "body part ARM is not CHEST"),
        # a chest code contradicted by a description: the header cannot be trusted
        (
            [cr("CHEST", study_description="XR CHEST AND ABDOMEN")],
            "study description names ABDOMEN, not CHEST",
        ),
        ([cr("CHEST", series_description="L KNEE")], "series description names KNEE, not CHEST"),
        ([cr(protocol_name="Rodilla AP")], "protocol name names KNEE, not CHEST"),
        # one image of another body part in the study is enough to refuse it
        ([cr("CHEST"), cr("HAND")], "body part HAND is not CHEST"),
        ([cr()], "no body part or description names the chest"),
        ([cr(study_description="PORTABLE AP")], "no body part or description names the chest"),
        (
            [cr("PORT")],
            "body part PORT is not a chest code and no description names the chest",
        ),
        (
            [cr("bad\\value")],
            "body part (not a valid code) is not a chest code and no description names the chest",
        ),
        ([ImageFacts(modality="CT", body_part="CHEST")], "modality CT is not CR or DX"),
        ([ImageFacts()], "modality unspecified is not CR or DX"),
        ([ImageFacts(modality="PR"), ImageFacts(modality="SR")], "modalities PR, SR are not CR or DX"),
    ],
)
def test_other_body_parts_and_modalities_are_refused_with_their_reason(
    images: list[ImageFacts], reason: str
) -> None:
    decision = decide(images)
    assert (decision.draft, decision.reason) == (False, reason)


def test_a_chest_protocol_mentioning_an_arm_is_still_a_chest() -> None:
    assert decide([cr("CHEST", "LL", protocol_name="CHEST LAT ARM UP"), cr("CHEST")]).draft


@pytest.mark.parametrize(
    "images",
    [
        [cr("CHEST", "LL")],
        [cr("CHEST", "RL"), cr("CHEST", "LATERAL")],
        [cr("CHEST", None, series_description="CHEST LAT")],
        [ImageFacts(modality="DX", body_part="CHEST", view_codes=("399067008",))],
        [cr("CHEST", None, image_laterality="L")],
    ],
)
def test_lateral_views_alone_wait_for_a_frontal_unless_allowed(images: list[ImageFacts]) -> None:
    decision = decide(images)
    assert (decision.draft, decision.reason) == (False, LATERAL_ONLY_REASON)
    allowed = decide(images, allow_lateral_only=True)
    assert allowed.draft and allowed.reason.endswith("lateral views only, allowed")


@pytest.mark.parametrize(
    "images",
    [
        [cr("CHEST", "LL"), cr("CHEST", "PA")],
        [cr("CHEST", "LL"), cr("CHEST", None)],  # the worker reads the image with no view information
        [cr("CHEST", None)],
        [cr("CHEST", None, series_description="CHEST PA AND LAT")],
    ],
)
def test_a_study_with_a_frontal_or_an_unmarked_image_is_drafted(images: list[ImageFacts]) -> None:
    assert decide(images).draft


def test_views_follow_the_workers_ladder() -> None:
    assert view_of(cr(view="LL", series_description="CHEST PA")) is View.LATERAL  # View Position first
    assert view_of(cr(view=None, series_description="CHEST LAT", protocol_name="PA")) is View.LATERAL
    assert view_of(cr(view=None, image_laterality="B")) is View.FRONTAL
    assert view_of(cr(view="RLD")) is View.UNKNOWN


def test_facts_are_read_from_a_header() -> None:
    header = Dataset()
    header.Modality = "dx"
    header.BodyPartExamined = "THORAX "
    header.ViewPosition = "LL"
    header.StudyDescription = "XR CHEST"
    header.SeriesDescription = "LAT"
    header.ProtocolName = "Chest"
    code = Dataset()
    code.CodeValue = "399067008"
    header.ViewCodeSequence = Sequence([code])
    assert facts_from_dataset(header) == ImageFacts(
        modality="DX",
        body_part="THORAX",
        view_position="LL",
        view_codes=("399067008",),
        study_description="XR CHEST",
        series_description="LAT",
        protocol_name="Chest",
    )
