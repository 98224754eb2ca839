"""The shared prompt layout."""

from __future__ import annotations

import pytest
import torch

from echo.decoding import build_context_ids, image_token_count, prepare_context
from echo.model import EchoVLConfig


def test_build_context_ids_layout() -> None:
    ids = build_context_ids(3, [10, 11], vision_start_id=3, image_pad_id=5, vision_end_id=4)
    assert ids == [3, 5, 5, 5, 4, 10, 11]


def test_build_context_ids_refuses_vision_tokens_in_the_prompt() -> None:
    with pytest.raises(ValueError, match="prompt_ids must not contain vision special tokens"):
        build_context_ids(3, [10, 5], vision_start_id=3, image_pad_id=5, vision_end_id=4)
    with pytest.raises(ValueError, match="n_image_tokens must be >= 1, got 0"):
        build_context_ids(0, [10], vision_start_id=3, image_pad_id=5, vision_end_id=4)


def test_image_token_count_merges_patches() -> None:
    assert image_token_count([1, 4, 6], 2) == 6
    with pytest.raises(ValueError, match=r"image grid \[1, 5, 6\] is not a multiple of the merge size 2"):
        image_token_count([1, 5, 6], 2)


def test_prepare_context_one_row_per_image() -> None:
    config = EchoVLConfig.tiny()
    grid = torch.tensor([[1, 4, 4], [1, 4, 4]])
    ctx = prepare_context(config, torch.zeros(32, config.vision.patch_dim), grid, [10, 11])
    assert ctx.input_ids.tolist() == [[3, 5, 5, 5, 5, 4, 10, 11]] * 2
    assert (ctx.batch_size, ctx.length) == (2, 8)
    per_row = prepare_context(config, torch.zeros(32, config.vision.patch_dim), grid, [[10, 11], [12, 13]])
    assert per_row.input_ids[:, -2:].tolist() == [[10, 11], [12, 13]]


def test_prepare_context_refuses_bad_input() -> None:
    config = EchoVLConfig.tiny()
    grid = torch.tensor([[1, 4, 4], [1, 4, 4]])
    pixels = torch.zeros(32, config.vision.patch_dim)
    with pytest.raises(ValueError, match=r"pixel_values must have 32 rows for grids"):
        prepare_context(config, pixels[:16], grid, [10])
    with pytest.raises(ValueError, match="contexts in a batch must have one length, got \\[7, 8\\]"):
        prepare_context(config, pixels, grid, [[10], [10, 11]])
    with pytest.raises(ValueError, match="1 prompts for 2 images"):
        prepare_context(config, pixels, grid, [[10]])
    with pytest.raises(ValueError, match=r"token ids outside the vocabulary \(size 64\): \[99\]"):
        prepare_context(config, pixels, grid, [99])
