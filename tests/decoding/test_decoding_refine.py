"""Confidence-gated refinement: the commit rule on literals, its numpy port, and the decoder on a
tiny random model against the window logits it saw."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from echo.decoding import decode_onestep, decode_refine
from echo.decoding.remasking import commit_refine
from echo.errors import UserError
from echo.runtime import remasking as numpy_remasking

B = 4
CONFIDENCE = torch.tensor([[0.9, 0.2, 0.95, 0.5, 0.7]])
MASKED = torch.tensor([[False, True, True, True, True]])


def bits(mask: torch.Tensor) -> str:
    return "".join("1" if x else "0" for x in mask[0].tolist())


def test_first_step_commits_the_confident_positions_only() -> None:
    # four masks over a two-step budget: quota 2, but refinement ignores it on the first step
    assert bits(commit_refine(CONFIDENCE, MASKED, torch.tensor([2]), 0.6)) == "00101"
    assert bits(commit_refine(CONFIDENCE, MASKED, torch.tensor([2]), 0.4)) == "00111"
    assert bits(commit_refine(CONFIDENCE, MASKED, torch.tensor([2]), 0.0)) == "01111"


def test_first_step_commits_at_least_the_most_confident_position() -> None:
    assert bits(commit_refine(CONFIDENCE, MASKED, torch.tensor([2]), 0.99)) == "00100"


def test_last_step_commits_every_remaining_mask() -> None:
    assert bits(commit_refine(CONFIDENCE, MASKED, torch.tensor([4]), 0.99)) == "01111"
    one_left = torch.tensor([[False, True, False, False, False]])
    assert bits(commit_refine(CONFIDENCE, one_left, torch.tensor([1]), 0.99)) == "01000"


def test_rows_are_independent() -> None:
    confidence = torch.tensor([[0.1, 0.9, 0.5], [0.8, 0.1, 0.3]])
    masked = torch.ones(2, 3, dtype=torch.bool)
    commit = commit_refine(confidence, masked, torch.tensor([2, 3]), 0.45)
    assert commit.tolist() == [[False, True, True], [True, True, True]]


def test_the_numpy_port_equals_torch_with_ties() -> None:
    rng = np.random.default_rng(0)
    for trial in range(60):
        confidence = (rng.integers(0, 5, size=(3, 8)) / 4).astype(np.float32)
        masked = rng.random((3, 8)) < 0.7
        masked[:, trial % 8] = True
        quota = numpy_remasking.num_transfer_tokens(masked.sum(axis=1), 1 + trial % 2)
        threshold = (0.0, 0.5, 0.75, 1.0)[trial % 4]
        got = numpy_remasking.commit_refine(confidence, masked, quota, threshold)
        want = commit_refine(
            torch.from_numpy(confidence), torch.from_numpy(masked), torch.from_numpy(quota), threshold
        )
        assert got.tolist() == want.tolist()


@pytest.mark.parametrize("mode", ["causal", "block_causal"])
def test_threshold_zero_is_the_one_step_decoder(tiny, mode: str) -> None:
    model = tiny.model(prompt_attention=mode, block_size=B)
    ctx = tiny.context(model, rows=2)
    refined = decode_refine(model, ctx, B, 16, threshold=0.0)
    onestep = decode_onestep(model, ctx, B, 16)
    assert refined.tokens == onestep.tokens
    assert refined.forwards == onestep.forwards
    assert refined.confidences == onestep.confidences


@pytest.mark.parametrize("threshold", [0.3, 0.6, 1.0])
def test_unsure_positions_take_the_second_forwards_argmax(tiny, threshold: float) -> None:
    """Replays the decoder from the logits of its own forwards: after the first forward of a block
    the confident positions (at least the most confident) keep their argmax, and only when some
    are left does a second forward decide them."""
    model = tiny.model(block_size=B)
    ctx = tiny.context(model, rows=1)
    result = decode_refine(model, ctx, B, 16, threshold=threshold, return_logits=True)
    mask_id = model.config.mask_token_id
    forwards = iter(result.logits[0])
    tokens: list[int] = []
    confidences: list[float] = []
    for steps in result.steps_per_block[0]:
        logits = next(forwards).clone()
        logits[:, mask_id] = float("-inf")
        confidence, prediction = logits.softmax(-1).max(-1)
        keep = confidence >= threshold
        keep[confidence.argmax()] = True
        assert steps == (1 if bool(keep.all()) else 2)
        if steps == 2:
            second = next(forwards).clone()
            second[:, mask_id] = float("-inf")
            second_confidence, second_prediction = second.softmax(-1).max(-1)
            prediction = torch.where(keep, prediction, second_prediction)
            confidence = torch.where(keep, confidence, second_confidence)
        tokens += prediction.tolist()
        confidences += confidence.tolist()
    assert next(forwards, None) is None
    assert result.tokens[0] == tokens
    assert result.confidences[0] == pytest.approx(confidences)
    assert result.forwards == sum(result.steps_per_block[0])


def test_refine_forwards_lie_between_one_and_two_per_block(tiny) -> None:
    model = tiny.model(block_size=B)
    ctx = tiny.context(model, rows=2)
    counts = [decode_refine(model, ctx, B, 16, threshold=t).forwards for t in (0.0, 0.5, 1.0)]
    assert counts[0] == 4 and counts[2] == 8 and 4 <= counts[1] <= 8


def test_bad_threshold_is_a_user_error(tiny) -> None:
    model = tiny.model(block_size=B)
    with pytest.raises(UserError, match=r"refine threshold must be within \[0, 1\], got 2"):
        decode_refine(model, tiny.context(model, rows=1), B, 8, threshold=2)
