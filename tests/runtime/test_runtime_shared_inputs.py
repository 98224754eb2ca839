"""Per-grid inputs computed once and shared read-only (vision index tables, context positions), and
a single image's pixels handed to the vision graph without a copy."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest

from echo.data.preprocess import PreprocessConfig, preprocess
from echo.runtime.batching import image_features
from echo.runtime.manifest import load_manifest
from echo.runtime.positions import left_padded_rope_index, rope_index, row_positions
from echo.runtime.vision_inputs import shared_vision_inputs, vision_inputs

BUNDLED = Path(__file__).resolve().parents[2] / "echo" / "assets" / "models" / "student-onnx"
GRIDS = (((1, 4, 6),), ((1, 6, 10), (1, 4, 4)), ((2, 4, 8),))


@pytest.mark.parametrize("grids", GRIDS)
def test_shared_vision_inputs_equal_fresh_ones_and_are_read_only(grids) -> None:
    shared, fresh = shared_vision_inputs(grids, 2, 4), vision_inputs(list(grids), 2, 4)
    for field in fields(fresh):
        got, want = getattr(shared, field.name), getattr(fresh, field.name)
        assert got.dtype == want.dtype and np.array_equal(got, want)
        with pytest.raises(ValueError, match="read-only"):
            got[...] = 0
    assert shared_vision_inputs(grids, 2, 4) is shared  # computed once per grid list
    assert shared_vision_inputs(grids, 2, 8) is not shared


def test_row_positions_equal_rope_index_and_padded_rows_keep_them() -> None:
    image, grid = 5, (1, 4, 6)  # 6 image tokens after merging by 2
    row = (7, 3, *[image] * 6, 4, 8, 9)
    want = rope_index(np.asarray([row]), [grid], image, 2)[:, 0]
    got = row_positions(row, (grid,), image, 2)
    assert np.array_equal(got, want) and not got.flags.writeable
    assert row_positions(row, (grid,), image, 2) is got
    padded = left_padded_rope_index([list(row), [7, 8]], [[grid], []], image, 2)
    assert np.array_equal(padded[:, 0], want)
    assert padded[:, 1].tolist() == [[0] * 9 + [0, 1]] * 3
    padded[:, 0] = -1  # the batch's own array: writing it leaves the shared rows alone
    assert np.array_equal(row_positions(row, (grid,), image, 2), want)


class _CountingVision:
    """A slot-table vision graph that records the pixel arrays it is given."""

    index_names = ["patch_positions", "window_slots", "window_places"]

    def __init__(self, hidden: int, unit: int) -> None:
        self.hidden, self.unit = hidden, unit
        self.pixels: list[np.ndarray] = []

    def run(self, pixel_values: np.ndarray, index_inputs) -> np.ndarray:
        self.pixels.append(pixel_values)
        rows = len(pixel_values) // self.unit
        return np.arange(rows * self.hidden, dtype=np.float32).reshape(rows, self.hidden)


def test_one_image_reaches_the_vision_graph_uncopied_several_in_one_call() -> None:
    manifest = load_manifest(BUNDLED, verify=False)
    config = PreprocessConfig.from_dict(manifest.preprocess)
    rng = np.random.default_rng(3)
    images = [preprocess(rng.random(shape).astype(np.float32), config) for shape in ((256, 256), (200, 300))]
    vision = _CountingVision(manifest.text.hidden_size, manifest.vision.merge_size**2)
    alone = image_features(images[:1], vision, manifest)  # type: ignore[arg-type]
    assert vision.pixels[0] is images[0].pixel_values
    assert alone.shape == (len(images[0].pixel_values) // vision.unit, vision.hidden)
    together = image_features(images, vision, manifest)  # type: ignore[arg-type]
    assert len(vision.pixels) == 2
    assert np.array_equal(vision.pixels[1], np.concatenate([image.pixel_values for image in images]))
    assert len(together) == sum(len(image.pixel_values) for image in images) // vision.unit
