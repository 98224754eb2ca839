"""Each finding must be visible at the model's resolution (~224 px) and drawn where the label says."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from echo.data.case import Case, sample_case
from echo.data.lateral import draw_lateral
from echo.data.phantom import draw_frontal, image_shape
from echo.data.streams import component_rng
from echo.findings import FINDINGS

SEED = 11
SIZE = 448  # drawn at twice the model's resolution, then downsampled to 224 as the model sees it


def _first_case(name: str, predicate=lambda details: True) -> tuple[int, Case]:
    for index in range(3000):
        case = sample_case(component_rng(SEED, index, "case"))
        if name in case.positives and predicate(case.positives[name]):
            return index, case
    raise AssertionError(f"no case with {name}")


def _at_224(pixels: np.ndarray) -> np.ndarray:
    return np.asarray(Image.fromarray(pixels, mode="F").resize((224, 224), Image.Resampling.BICUBIC))


def _difference(name: str, index: int, case: Case) -> np.ndarray:
    """Signed change at 224 px that the finding makes (with minus without)."""
    with_finding = _at_224(draw_frontal(case, SIZE, SEED, index).pixels)
    without = _at_224(draw_frontal(case.without(name), SIZE, SEED, index).pixels)
    return with_finding - without


SIDE_OF = {  # which attribute says the image side; the patient's right is the image's left
    "pleural_effusion": lambda d: d["side"],
    "pneumothorax": lambda d: d["side"],
    "nodule": lambda d: d["side"],
    "consolidation": lambda d: d["lobe"].split()[0],
    "pacemaker": lambda d: d["side"],
}


@pytest.mark.parametrize("name", FINDINGS)
def test_finding_is_visible_at_224_pixels_on_its_side(name: str) -> None:
    index, case = _first_case(name, lambda d: d.get("side") != "bilateral")
    changed = np.abs(_difference(name, index, case)) > 0.04
    assert changed.sum() >= 40, f"{name} changes only {changed.sum()} pixels at 224 px"
    if name in SIDE_OF:
        columns = np.nonzero(changed)[1]
        image_side = "right" if columns.mean() < 112 else "left"  # patient's side
        assert image_side == SIDE_OF[name](case.positives[name])


def test_small_effusion_still_blunts_the_costophrenic_angle_visibly() -> None:
    index, case = _first_case("pleural_effusion", lambda d: d["size"] == "small" and d["side"] != "bilateral")
    difference = _difference("pleural_effusion", index, case)
    rows, _ = np.nonzero(difference > 0.04)
    assert len(rows) >= 40
    assert rows.mean() > 224 * 0.55  # at the lung base
    assert difference.max() > 0.15  # fluid is denser (brighter) than aerated lung


def test_pneumothorax_makes_the_pleural_space_darker_than_lung() -> None:
    index, case = _first_case("pneumothorax")
    difference = _difference("pneumothorax", index, case)
    assert (difference < -0.04).sum() > 200  # a lucent rim without markings
    assert difference.min() < -0.2


def test_cardiomegaly_widens_the_heart_to_the_sampled_ratio() -> None:
    index, case = _first_case("cardiomegaly")
    enlarged = draw_frontal(case, SIZE, SEED, index).thorax
    normal = draw_frontal(case.without("cardiomegaly"), SIZE, SEED, index).thorax
    assert enlarged.ctr == pytest.approx(case.detail("cardiomegaly", "ctr"))
    assert enlarged.ctr >= 0.56 > 0.48 >= normal.ctr
    assert enlarged.heart_width > normal.heart_width * 1.1


def test_frontal_is_deterministic_float_in_unit_range_with_the_detector_aspect() -> None:
    case = sample_case(component_rng(SEED, 3, "case"))
    first = draw_frontal(case, 128, SEED, 3).pixels
    assert first.dtype == np.float32
    assert first.shape == image_shape(128, case.acquisition.aspect)
    assert first.min() >= 0.0 and first.max() <= 1.0
    np.testing.assert_array_equal(first, draw_frontal(case, 128, SEED, 3).pixels)
    assert not np.array_equal(first, draw_frontal(case, 128, SEED, 4).pixels)


def test_lateral_view_is_drawn_and_shows_an_effusion() -> None:
    index, case = _first_case("pleural_effusion", lambda d: d["size"] != "small")
    with_fluid = draw_lateral(case, 128, SEED, index)
    without = draw_lateral(case.without("pleural_effusion"), 128, SEED, index)
    assert with_fluid.shape == image_shape(128, case.acquisition.aspect)
    assert (with_fluid - without > 0.04).sum() > 50


def test_too_small_canvas_is_rejected() -> None:
    case = sample_case(component_rng(SEED, 0, "case"))
    with pytest.raises(ValueError, match="canvas must be at least 16x16 pixels"):
        draw_frontal(case, 8, SEED, 0)
