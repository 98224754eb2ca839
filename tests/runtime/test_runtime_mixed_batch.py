"""Rows of different image grids (context lengths) decoded in one pass: left-padded to the longest,
pad keys masked, positions per row; every row writes exactly the tokens it writes alone."""

from __future__ import annotations

import functools
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from echo.data.phantom import draw_frontal
from echo.data.preprocess import preprocess, to_uint8
from echo.data.synthetic import study_case
from echo.runtime import DecodeOptions, Engine
from echo.runtime.batching import left_pad, plan_passes
from echo.runtime.images import display_pixels
from echo.runtime.masks import BlockCausal, Causal, attention_mask
from echo.runtime.positions import left_padded_rope_index, rope_index

BUNDLED = Path(__file__).resolve().parents[2] / "echo" / "assets" / "models" / "student-onnx"
MODES = ("onestep", "multistep", "ar", "refine")
# five grids under the tiny preprocessing (at most 112 x 168 pixels)
SHAPES = ((200, 180), (256, 300), (90, 120), (300, 140), (150, 260))


def assert_batched_equals_single(engine: Engine, images: list, decode: str) -> list[list[int]]:
    """One pass over every image writes each row's tokens (steps, confidences) as it writes alone."""
    options = DecodeOptions(decode=decode)
    assert len({len(row) for row in engine._prepare(images).ids}) == 1
    together = engine.decode_processed(images, options)
    alone = [engine.decode_processed([image], options) for image in images]
    assert together.tokens == [out.tokens[0] for out in alone], decode
    assert together.steps_per_block == [out.steps_per_block[0] for out in alone], decode
    for row, out in zip(together.confidences, alone, strict=True):
        assert row == pytest.approx(out.confidences[0], abs=1e-5), decode
    return together.tokens


# ---- the pure parts -------------------------------------------------------------------------------


def test_padded_mask_hides_pad_keys_and_lets_a_pad_see_itself() -> None:
    mask = attention_mask(Causal(), 2, 4, 0, (0, 2)).astype(int)
    assert mask.tolist() == [
        [[1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1]],
        [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 1, 1]],
    ]
    # a block step after a 3-token context padded by 1 in row 1: blocks of 2 from position 3
    step = attention_mask(BlockCausal(2, 3), 2, 2, 3, (0, 1))
    assert step.astype(int).tolist() == [[[1, 1, 1, 1, 1]] * 2, [[0, 1, 1, 1, 1]] * 2]
    assert not step.flags.writeable
    unpadded = attention_mask(Causal(), 2, 4, 0, (0, 0))
    assert np.array_equal(unpadded, attention_mask(Causal(), 2, 4, 0))
    with pytest.raises(ValueError, match="3 pad counts for a batch of 2"):
        attention_mask(Causal(), 2, 4, 0, (0, 1, 2))


def test_left_pad_and_positions_per_row() -> None:
    ids, pads = left_pad([[7, 5, 5, 8], [7, 5, 5, 5, 5, 8, 9]], pad_id=0)
    assert ids.tolist() == [[0, 0, 0, 7, 5, 5, 8], [7, 5, 5, 5, 5, 8, 9]]
    assert pads == (3, 0)
    rows, grids = [[7, 5, 5, 8], [7, 5, 5, 5, 5, 8, 9]], [[(1, 2, 4)], [(1, 4, 4)]]
    positions = left_padded_rope_index(rows, grids, image_token_id=5, merge_size=2)
    assert positions.shape == (3, 2, 7)
    assert positions[:, 0, :3].tolist() == [[0] * 3] * 3
    assert np.array_equal(positions[:, 0, 3:], rope_index(np.asarray([rows[0]]), grids[0], 5, 2)[:, 0])
    assert positions[:, 1].tolist() == [[0, 1, 1, 1, 1, 3, 4], [0, 1, 1, 2, 2, 3, 4], [0, 1, 2, 1, 2, 3, 4]]


def test_passes_group_any_lengths_for_causal_prompts_one_length_for_block_causal() -> None:
    lengths = [30, 20, 30, 25, 20]
    assert plan_passes(lengths, "causal", 8) == [[1, 4, 3, 0, 2]]
    assert plan_passes(lengths, "causal", 2) == [[1, 4], [3, 0], [2]]  # by length: little padding
    assert plan_passes(lengths, "block_causal", 8) == [[0, 2], [1, 4], [3]]
    assert plan_passes(lengths, "block_causal", 1) == [[0], [2], [1], [4], [3]]
    with pytest.raises(ValueError, match="max_batch must be >= 1"):
        plan_passes(lengths, "causal", 0)


# ---- the tiny random export -----------------------------------------------------------------------


@pytest.fixture
def mixed_images(tiny) -> list:
    images = tiny.preprocessed(tiny.images(seed=40, shapes=SHAPES))
    assert len({image.grid_thw for image in images}) == len(SHAPES)
    return images


@pytest.mark.parametrize("io_binding", [False, True])  # True: the device cache's keep_rows
def test_mixed_grids_decode_as_alone_with_rows_that_stop_early(tiny, tmp_path, mixed_images, io_binding):
    """eos set to a token this random model writes often: rows finish at different blocks."""
    written = tiny.engine.decode_processed(mixed_images, DecodeOptions(decode="onestep")).tokens
    frequent = Counter(token for row in written for token in row).most_common(1)[0][0]
    variant = tiny.manifest_variant(tiny.export, tmp_path / "eos", tokens={"eos": frequent})
    engine = Engine.load(variant, warm_up=False, io_binding=io_binding)
    lengths = set()
    for decode in MODES:
        lengths |= {len(row) for row in assert_batched_equals_single(engine, mixed_images, decode)}
    assert len(lengths) > 2  # rows did stop at different points


def test_mixed_grids_run_to_the_token_limit_as_alone(tiny, mixed_images) -> None:
    for decode in MODES:
        tokens = assert_batched_equals_single(tiny.engine, mixed_images, decode)
        assert {len(row) for row in tokens} == {24}


def test_generate_batch_puts_mixed_grids_in_one_pass(tiny) -> None:
    images = tiny.images(seed=41, shapes=SHAPES)
    single = [tiny.engine.generate(image).token_ids for image in images]
    batch = tiny.engine.generate_batch(images)
    assert [r.token_ids for r in batch] == single
    assert [r.batch_size for r in batch] == [5] * 5
    small = Engine.load(tiny.export, warm_up=False, max_batch=2)
    reports = small.generate_batch(images)
    assert [r.token_ids for r in reports] == single
    # image tokens 20, 20, 12, 21, 18: passes by context length (2, 4), (0, 1), (3)
    assert [r.batch_size for r in reports] == [2, 2, 2, 1, 2]


def test_block_causal_prompts_share_a_pass_only_at_one_context_length(tiny, tmp_path, mixed_images):
    variant = tiny.manifest_variant(
        tiny.export, tmp_path / "bc", generation={"prompt_attention": "block_causal"}
    )
    engine = Engine.load(variant, warm_up=False)
    with pytest.raises(ValueError, match="'block_causal' prompts decode rows of one context length"):
        engine.decode_processed(mixed_images, DecodeOptions(decode="onestep"))
    images = tiny.images(seed=42, shapes=((200, 180), (90, 120), (210, 190), (180, 200)))
    reports = engine.generate_batch(images)
    assert [r.batch_size for r in reports] == [3, 1, 3, 3]  # (200, 180) and (180, 200): one length
    assert [r.token_ids for r in reports] == [engine.generate(image).token_ids for image in images]


# ---- the bundled demo student ---------------------------------------------------------------------


def bundled_images() -> list[np.ndarray]:
    """Synthetic frontals cut to four aspect ratios (four grids under the student's pixel budget)."""
    cuts = ((slice(None), slice(None)), (slice(None), slice(0, 170)), (slice(0, 150), slice(None)),
            (slice(0, 120), slice(0, 250)))  # fmt: skip
    return [
        to_uint8(draw_frontal(study_case(11, index), 256, 11, index).pixels)[cut]
        for index, cut in enumerate(cuts)
    ]


@pytest.fixture(scope="module")
def bundled() -> Engine:
    return Engine.load(BUNDLED, providers="cpu", threads=1, warm_up=False)


@pytest.mark.parametrize("decode", MODES)
def test_bundled_student_decodes_mixed_grids_as_alone(bundled: Engine, decode: str) -> None:
    images = [preprocess(display_pixels(image), bundled.preprocess_config) for image in bundled_images()]
    assert len({image.grid_thw for image in images}) == 4
    tokens = assert_batched_equals_single(bundled, images, decode)
    assert min(len(row) for row in tokens) > 16


def test_vision_runs_once_per_pass_on_slot_tables_once_per_image_on_dense_masks(
    tiny, bundled: Engine, mixed_images, monkeypatch
) -> None:
    """Slot-table graphs (every current export, the bundled student's included) take a pass's
    images in one call. A graph exported before the slot tables names `window_segments` among its
    inputs; its (N, N) masks cost the square of a call's patches, so each image takes its own call
    (a stand-in for such a graph here: no export of one is kept)."""
    bundled_inputs = [
        preprocess(display_pixels(image), bundled.preprocess_config) for image in bundled_images()
    ]
    assert "window_segments" not in bundled.vision.index_names
    hidden = bundled.manifest.text.hidden_size
    unit = bundled.manifest.vision.merge_size**2
    cases = ((tiny.engine, mixed_images, 1, False), (bundled, bundled_inputs, 1, False))
    for engine, images, calls, dense in (*cases, (bundled, bundled_inputs, 4, True)):
        counted: list[int] = []
        fed: list[set[str]] = []

        def run(pixels, index, vision=engine.vision, original=engine.vision.run, counted=counted, fed=fed):
            counted.append(len(pixels))
            if original is not None:
                return original(pixels, index)
            fed.append(set(index.feeds(vision.index_names)))
            return np.zeros((len(pixels) // unit, hidden), np.float32)

        if dense:  # the stand-in answers zeros of the features' shape instead of running the graph
            run = functools.partial(run, original=None)
            names = ["window_segments", "frame_segments", "patch_positions"]
            monkeypatch.setattr(engine.vision, "index_names", names)
        monkeypatch.setattr(engine.vision, "run", run)
        engine.decode_processed(images, DecodeOptions(decode="onestep", max_new_tokens=8))
        assert len(counted) == calls
        assert sum(counted) == sum(len(image.pixel_values) for image in images)
        assert fed == ([{"window_segments", "frame_segments", "patch_positions"}] * calls if dense else [])


def test_generate_batch_never_returns_fewer_reports_than_images(bundled, monkeypatch) -> None:
    """Callers pair reports with their studies by position: a pass plan that loses an image must
    fail loudly, never shift the reports."""
    import echo.runtime.engine as engine_module

    engine = bundled
    monkeypatch.setattr(engine_module, "plan_passes", lambda lengths, layout, size: [[0]])
    images = [np.zeros((64, 64), np.float32), np.ones((64, 64), np.float32)]
    with pytest.raises(RuntimeError, match=r"no report was decoded for images \[1\] of 2"):
        engine.generate_batch(images)
