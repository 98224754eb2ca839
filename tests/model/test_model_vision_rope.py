"""Window layout, patch positions and M-RoPE ids, against transformers' helpers and literals."""

from __future__ import annotations

import pytest
import torch

from echo.model import EchoVLConfig, EchoVLM, continue_positions
from echo.model.rope import rope_index
from echo.model.vision import patch_positions, window_order


def test_window_order_literal() -> None:
    # one image of 4x6 patches = 2x3 merged tokens, windows of 2x2 merged tokens:
    # window 0 holds tokens 0,1,3,4; window 1 (partial) holds 2,5
    order, lengths = window_order(torch.tensor([[1, 4, 6]]), merge_size=2, window_patches=4)
    assert order.tolist() == [0, 1, 3, 4, 2, 5]
    assert lengths == [4, 2]


@pytest.mark.parametrize("grids", [[[1, 10, 6]], [[1, 6, 10], [1, 4, 4]], [[2, 8, 8]], [[1, 16, 12]]])
def test_window_order_equals_transformers(grids: list[list[int]]) -> None:
    from transformers.vision_utils import get_vision_window_index

    grid = torch.tensor(grids)
    expected_index, expected_cu = get_vision_window_index(
        grid, spatial_merge_size=2, window_size=56, patch_size=14
    )
    order, lengths = window_order(grid, merge_size=2, window_patches=56 // 14)
    assert torch.equal(order, expected_index)
    cumulative = torch.tensor([0, *lengths]).cumsum(0) * 4  # in patches
    assert cumulative.tolist() == expected_cu.tolist()


def test_patch_positions_equal_transformers() -> None:
    from transformers.vision_utils import get_vision_position_ids

    grid = torch.tensor([[1, 4, 6], [2, 2, 4]])
    assert torch.equal(patch_positions(grid, 2), get_vision_position_ids(grid, 2))
    # merge-block-major: the first 2x2 block is rows 0-1, columns 0-1
    assert patch_positions(torch.tensor([[1, 2, 4]]), 2).tolist()[:4] == [[0, 0], [0, 1], [1, 0], [1, 1]]


def test_rope_index_literal() -> None:
    # [text, vs, image of 2x3 merged tokens, ve, text]: the image takes (t, h, w) from 2; text resumes at 2 + 3
    ids = torch.tensor([[9, 3, 5, 5, 5, 5, 5, 5, 4, 9]])
    positions = rope_index(ids, torch.tensor([[1, 4, 6]]), image_token_id=5, spatial_merge_size=2)
    assert positions[:, 0].tolist() == [
        [0, 1, 2, 2, 2, 2, 2, 2, 5, 6],
        [0, 1, 2, 2, 2, 3, 3, 3, 5, 6],
        [0, 1, 2, 3, 4, 2, 3, 4, 5, 6],
    ]


def test_rope_index_of_text_is_plain() -> None:
    positions = rope_index(torch.tensor([[7, 8, 9]]), None, image_token_id=5, spatial_merge_size=2)
    assert positions.tolist() == [[[0, 1, 2]]] * 3


def test_rope_index_rejects_a_run_that_does_not_match_its_grid() -> None:
    ids = torch.tensor([[3, 5, 5, 5, 4]])
    with pytest.raises(
        ValueError, match=r"an image-token run of 3 tokens does not match its grid \[1, 2, 3\]"
    ):
        rope_index(ids, torch.tensor([[1, 4, 6]]), image_token_id=5, spatial_merge_size=2)
    with pytest.raises(ValueError, match="more image-token runs in input_ids than rows in image_grid_thw"):
        rope_index(ids, None, image_token_id=5, spatial_merge_size=2)


def test_continue_positions_follow_the_max() -> None:
    positions = torch.tensor([[[0, 1, 2, 2, 5]], [[0, 1, 2, 3, 5]], [[0, 1, 4, 2, 5]]])
    assert continue_positions(positions, 3).tolist() == [[[6, 7, 8]]] * 3


def test_embed_places_image_features_in_order() -> None:
    torch.manual_seed(0)
    model = EchoVLM(EchoVLConfig.tiny()).eval()
    grid = torch.tensor([[1, 4, 4], [1, 4, 4]])
    pixels = torch.randn(32, model.config.vision.patch_dim)
    ids = torch.tensor([[3, 5, 5, 5, 5, 4, 9], [3, 5, 5, 5, 5, 4, 9]])
    with torch.no_grad():
        embeds = model.embed(ids, pixels, grid)
        features = model.encode_images(pixels, grid)
    assert embeds.shape == (2, 7, 64)
    assert torch.equal(embeds[0, 1:5], features[:4]) and torch.equal(embeds[1, 1:5], features[4:])
    assert torch.equal(embeds[:, 6], model.model.embed_tokens.weight[9].expand(2, -1))


def test_embed_refuses_a_feature_count_mismatch() -> None:
    model = EchoVLM(EchoVLConfig.tiny()).eval()
    ids = torch.tensor([[3, 5, 5, 4]])
    with pytest.raises(ValueError, match="input_ids hold 2 image tokens, the images give 4 features"):
        model.embed(ids, torch.randn(16, model.config.vision.patch_dim), torch.tensor([[1, 4, 4]]))


def test_forward_rejects_a_mask_of_the_wrong_length() -> None:
    model = EchoVLM(EchoVLConfig.tiny()).eval()
    embeds = torch.zeros(1, 3, 64)
    positions = torch.zeros(3, 1, 3, dtype=torch.long)
    with pytest.raises(AssertionError, match=r"attention_mask must be \(B, T, past \+ T\) = \(1, 3, 3\)"):
        model(embeds, positions, torch.ones(1, 3, 4, dtype=torch.bool))


@pytest.mark.parametrize("lengths", [[4, 4, 4], [5, 2, 7], [1], [3, 8]])
def test_segment_attention_equals_the_block_diagonal_mask(lengths: list[int]) -> None:
    from torch.nn.functional import scaled_dot_product_attention

    from echo.model.vision import Segments, segment_attention

    n, heads, hd = sum(lengths), 2, 8
    q, k, v = torch.randn(3, n, heads, hd).unbind(0)
    segment = torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(lengths))
    dense = segment[:, None] == segment[None, :]
    rows = [t.transpose(0, 1)[None] for t in (q, k, v)]  # (1, heads, N, hd)
    expected = scaled_dot_product_attention(*rows, attn_mask=dense)[0].transpose(0, 1)
    segments = Segments.of(lengths, torch.device("cpu"))
    assert segments.padded == (len(set(lengths)) > 1)
    assert torch.allclose(segment_attention(q, k, v, segments), expected, atol=1e-6)
