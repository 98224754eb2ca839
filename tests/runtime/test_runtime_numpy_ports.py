"""The numpy ports in echo.runtime equal the torch functions they port, including tie-breaking."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from echo.decoding import remasking as torch_remasking
from echo.model import masks as torch_masks
from echo.model.rope import continue_positions as torch_continue_positions
from echo.model.rope import rope_index as torch_rope_index
from echo.model.vision import patch_positions as torch_patch_positions
from echo.model.vision import window_order as torch_window_order
from echo.runtime import masks, remasking
from echo.runtime.positions import continue_positions, rope_index
from echo.runtime.vision_inputs import patch_positions, segment_slots, vision_inputs, window_order

GRIDS = ([(1, 4, 6)], [(1, 8, 12)], [(1, 6, 10), (1, 4, 4)], [(2, 4, 8)], [(1, 2, 2)])


@pytest.mark.parametrize("grids", GRIDS)
def test_window_order_and_patch_positions_equal_torch(grids) -> None:
    order, lengths = window_order(grids, 2, 4)
    want_order, want_lengths = torch_window_order(torch.tensor(grids), 2, 4)
    assert order.tolist() == want_order.tolist()
    assert lengths == want_lengths
    assert patch_positions(grids, 2).tolist() == torch_patch_positions(torch.tensor(grids), 2).tolist()


def test_vision_inputs_segments_and_inverse() -> None:
    inputs = vision_inputs([(1, 4, 6), (1, 2, 4)], merge_size=2, window_patches=4)
    assert inputs.window_index[inputs.restore_index].tolist() == list(range(8))
    # image 1: 2 x 3 merged tokens in windows of 2 x 2 -> windows of 4 and 2 tokens; image 2: one of 2
    assert np.bincount(inputs.window_segments).tolist() == [16, 8, 8]
    assert inputs.frame_segments.tolist() == [0] * 24 + [1] * 8
    assert all(value.dtype == np.int64 for value in inputs.feeds().values())


def test_segment_slots_pad_short_segments_and_place_every_position() -> None:
    slots, places = segment_slots([2, 1, 3])
    assert slots.tolist() == [[0, 1, -1], [2, -1, -1], [3, 4, 5]]
    assert places.tolist() == [0, 1, 3, 6, 7, 8]
    assert slots.reshape(-1)[places].tolist() == list(range(6))


def test_vision_inputs_slot_tables_list_windows_and_frames() -> None:
    inputs = vision_inputs([(1, 4, 6), (1, 2, 4)], merge_size=2, window_patches=4)
    assert inputs.window_slots.shape == (3, 16) and inputs.frame_slots.shape == (2, 24)
    assert inputs.window_slots[1].tolist() == list(range(16, 24)) + [-1] * 8  # the partial window
    assert inputs.frame_slots[1].tolist() == list(range(24, 32)) + [-1] * 16
    for slots, places in (
        (inputs.window_slots, inputs.window_places),
        (inputs.frame_slots, inputs.frame_places),
    ):
        assert slots.reshape(-1)[places].tolist() == list(range(32))
    assert list(inputs.feeds(["window_slots", "pixel_values", "frame_segments"])) == [
        "window_slots",
        "frame_segments",
    ]


def test_vision_inputs_refuse_grids_off_the_merge_size() -> None:
    with pytest.raises(
        ValueError, match=r"image grid \[1, 3, 4\] is not a positive multiple of the merge size 2"
    ):
        vision_inputs([(1, 3, 4)], merge_size=2, window_patches=4)
    with pytest.raises(ValueError, match="at least one image grid"):
        vision_inputs([], merge_size=2, window_patches=4)


def test_rope_index_and_continuation_equal_torch() -> None:
    ids = np.array([[3] + [5] * 6 + [4, 10, 11, 12], [3] + [5] * 6 + [4, 13, 14, 15]])
    grids = [(1, 4, 6), (1, 4, 6)]
    got = rope_index(ids, grids, image_token_id=5, merge_size=2)
    want = torch_rope_index(torch.from_numpy(ids), torch.tensor(grids), 5, 2)
    assert got.tolist() == want.tolist()
    assert continue_positions(got, 5).tolist() == torch_continue_positions(want, 5).tolist()


def test_rope_index_refuses_a_run_that_does_not_match_its_grid() -> None:
    ids = np.array([[3, 5, 5, 5, 4]])
    with pytest.raises(
        ValueError, match=r"an image-token run of 3 tokens does not match its grid \[1, 2, 3\]"
    ):
        rope_index(ids, [(1, 4, 6)], image_token_id=5, merge_size=2)
    with pytest.raises(ValueError, match="more image-token runs"):
        rope_index(ids, [], image_token_id=5, merge_size=2)


@pytest.mark.parametrize(
    ("q_len", "past", "block", "offset"), [(5, 0, 2, 0), (8, 11, 4, 11), (16, 23, 8, 7), (1, 9, 3, 4)]
)
def test_masks_equal_torch(q_len: int, past: int, block: int, offset: int) -> None:
    assert masks.causal_mask(q_len, past).tolist() == torch_masks.causal_mask(q_len, past).tolist()
    got = masks.block_causal_mask(q_len, block, past, offset)
    assert got.tolist() == torch_masks.block_causal_mask(q_len, block, past, offset).tolist()


def test_block_causal_mask_literal() -> None:
    """Two blocks of two after a one-token causal context (rows are queries)."""
    got = masks.block_causal_mask(5, 2, offset=1).astype(int)
    assert ["".join(map(str, row)) for row in got.tolist()] == ["10000", "11100", "11100", "11111", "11111"]


@pytest.mark.parametrize("name", sorted(remasking.REMASKING_STRATEGIES))
def test_remasking_strategies_equal_torch_with_ties(name: str) -> None:
    rng = np.random.default_rng(0)
    for trial in range(50):
        # coarse confidences make ties common; leftmost must win, as in torch's stable sort
        confidence = (rng.integers(0, 5, size=(3, 8)) / 4).astype(np.float32)
        masked = rng.random((3, 8)) < 0.7
        masked[:, trial % 8] = True
        quota = remasking.num_transfer_tokens(masked.sum(axis=1), 1 + trial % 4)
        got = remasking.REMASKING_STRATEGIES[name](confidence, masked, quota, 0.75)
        want = torch_remasking.REMASKING_STRATEGIES[name](
            torch.from_numpy(confidence), torch.from_numpy(masked), torch.from_numpy(quota), 0.75
        )
        assert got.tolist() == want.tolist()


def test_num_transfer_tokens_spreads_evenly_and_refuses_no_steps() -> None:
    assert remasking.num_transfer_tokens(np.array([8, 8, 8]), 3).tolist() == [3, 3, 3]
    assert remasking.num_transfer_tokens(np.array([8, 5, 2]), 3).tolist() == [3, 2, 1]
    with pytest.raises(ValueError, match="steps_left must be >= 1, got 0"):
        remasking.num_transfer_tokens(np.array([1]), 0)


def test_unknown_remasking_strategy_is_a_user_error() -> None:
    from echo.errors import UserError

    with pytest.raises(UserError, match="unknown remasking strategy 'random'"):
        remasking.remasking_strategy("random")


@pytest.mark.parametrize("name", sorted(remasking.REMASKING_STRATEGIES) + ["refine"])
def test_commit_skips_ranking_only_where_every_strategy_commits_all(name: str) -> None:
    """commit() returns the masked positions without ranking when each row's quota covers its
    masks (the one-step decoder's only step); every strategy agrees, and otherwise it defers."""
    strategy = remasking.commit_refine if name == "refine" else remasking.REMASKING_STRATEGIES[name]
    rng = np.random.default_rng(1)
    for _ in range(30):
        confidence = rng.random((3, 8)).astype(np.float32)
        masked = rng.random((3, 8)) < 0.6
        remaining = masked.sum(axis=1)
        covered = remasking.commit(strategy, confidence, masked, remaining + rng.integers(0, 2, 3), 0.5)
        assert covered.tolist() == masked.tolist()
        assert covered is not masked
        assert covered.tolist() == strategy(confidence, masked, remaining, 0.5).tolist()
        partial = np.maximum(remaining - 1, 0)
        got = remasking.commit(strategy, confidence, masked, partial, 0.5)
        assert got.tolist() == strategy(confidence, masked, partial, 0.5).tolist()


def test_confidence_rank_orders_by_confidence_ties_leftmost() -> None:
    confidence = np.array([[0.5, 0.9, 0.5, 0.1, 0.9]], dtype=np.float32)
    masked = np.array([[True, True, True, False, True]])
    # 0.9 at 1 then 4, 0.5 at 0 then 2; the unmasked position ranks last
    assert remasking._confidence_rank(confidence, masked).tolist() == [[2, 0, 3, 4, 1]]


def test_attention_masks_are_cached_read_only_and_batched() -> None:
    attention = masks.BlockCausal(block_size=4, offset=3)
    mask = masks.attention_mask(attention, 2, 8, 5)
    assert mask.shape == (2, 8, 13) and mask.flags.c_contiguous and not mask.flags.writeable
    assert mask.tolist() == [masks.block_causal_mask(8, 4, 5, 3).tolist()] * 2
    assert masks.attention_mask(masks.BlockCausal(4, 3), 2, 8, 5) is mask  # equal settings, one array
    assert masks.attention_mask(masks.Causal(), 1, 1, 6).tolist() == [masks.causal_mask(1, 6).tolist()]
