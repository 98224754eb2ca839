"""Choosing the image the model reads: the frontal view, by the strongest evidence, with a fallback."""

from __future__ import annotations

import pytest
from pydicom import Dataset

from worker.views import ViewCandidate, candidate_from_dataset, pick_frontal


def image(number: int, **attributes: object) -> ViewCandidate:
    return ViewCandidate(
        instance_id=number, sop_instance_uid=f"1.2.{number}", instance_number=number, **attributes
    )


def test_view_position_pa_beats_a_lateral_sent_first() -> None:
    pick = pick_frontal([image(1, view_position="LL"), image(2, view_position="PA")])
    assert (pick.candidate.instance_id, pick.reason, pick.fallback) == (
        2,
        "instance 2: View Position PA",
        False,
    )


def test_pa_is_preferred_to_ap() -> None:
    assert (
        pick_frontal([image(1, view_position="AP"), image(2, view_position="PA")]).candidate.instance_id == 2
    )


def test_view_position_outranks_weaker_hints() -> None:
    pick = pick_frontal([image(1, series_description="CHEST PA"), image(2, view_position="AP")])
    assert pick.candidate.instance_id == 2


def test_the_coded_view_is_read_when_view_position_is_empty() -> None:
    pick = pick_frontal([image(1, view_codes=("399067008",)), image(2, view_codes=("399348003",))])
    assert (pick.candidate.instance_id, pick.reason) == (2, "instance 2: View Code Sequence says PA")


def test_series_description_words() -> None:
    pick = pick_frontal([image(1, series_description="Chest LAT"), image(2, series_description="Chest P-A")])
    assert (pick.candidate.instance_id, pick.reason) == (
        2,
        "instance 2: Series Description 'Chest P-A' names a frontal view",
    )


def test_a_description_naming_both_views_is_no_evidence() -> None:
    pick = pick_frontal([image(1, series_description="CHEST PA AND LAT")])
    assert pick.fallback and pick.reason.startswith("fallback: no image is marked frontal")


def test_image_laterality_as_the_last_hint() -> None:
    pick = pick_frontal([image(1, image_laterality="L"), image(2, image_laterality="B")])
    assert (pick.candidate.instance_id, pick.reason) == (2, "instance 2: Image Laterality B (both sides)")


def test_among_equals_the_chest_image_then_the_lowest_number() -> None:
    assert (
        pick_frontal(
            [
                image(1, view_position="PA", body_part="ABDOMEN"),
                image(2, view_position="PA", body_part="CHEST"),
            ]
        ).candidate.instance_id
        == 2
    )
    assert (
        pick_frontal([image(3, view_position="PA"), image(2, view_position="PA")]).candidate.instance_id == 2
    )


def test_fallback_without_view_information_says_so() -> None:
    pick = pick_frontal([image(1, view_position="LL"), image(2, body_part="CHEST")])
    assert pick.candidate.instance_id == 2 and pick.fallback
    assert (
        pick.reason
        == "fallback: no image is marked frontal; instance 2 has no view information (Body Part CHEST)"
    )


def test_fallback_to_a_lateral_when_that_is_all_there_is() -> None:
    pick = pick_frontal([image(4, view_position="LATERAL")])
    assert pick.fallback
    assert pick.reason == "fallback: only lateral views in the study; instance 4 (View Position LATERAL)"


def test_an_empty_study_is_refused() -> None:
    with pytest.raises(ValueError, match="the study has no readable image to choose from"):
        pick_frontal([])


def test_the_evidence_is_read_from_the_header() -> None:
    header = Dataset()
    header.SOPInstanceUID = "1.2.3"
    header.ViewPosition = "PA"
    code = Dataset()
    code.CodeValue = "399348003"
    header.ViewCodeSequence = [code]
    header.SeriesDescription = "CHEST"
    header.ImageLaterality = "U"
    header.BodyPartExamined = "CHEST"
    header.InstanceNumber = "7"
    assert candidate_from_dataset(5, header) == ViewCandidate(
        instance_id=5,
        sop_instance_uid="1.2.3",
        view_position="PA",
        view_codes=("399348003",),
        series_description="CHEST",
        protocol_name=None,
        image_laterality="U",
        body_part="CHEST",
        instance_number=7,
    )
    assert pick_frontal([candidate_from_dataset(5, header)]).reason == "instance 7: View Position PA"
