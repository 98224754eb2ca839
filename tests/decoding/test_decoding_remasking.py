"""Remasking strategies: small pure functions, checked on literals."""

from __future__ import annotations

import pytest
import torch

from echo.decoding import REMASKING_STRATEGIES, num_transfer_tokens
from echo.decoding.remasking import (
    commit_low_confidence_dynamic,
    commit_low_confidence_static,
    commit_sequential,
    remasking_strategy,
)
from echo.errors import UserError

CONFIDENCE = torch.tensor([[0.9, 0.2, 0.95, 0.5, 0.7]])
MASKED = torch.tensor([[False, True, True, True, True]])


def bits(mask: torch.Tensor) -> str:
    return "".join("1" if x else "0" for x in mask[0].tolist())


def test_num_transfer_tokens_spreads_the_remainder_first() -> None:
    remaining, schedule = torch.tensor([8]), []
    for steps_left in (3, 2, 1):
        k = num_transfer_tokens(remaining, steps_left)
        schedule.append(int(k))
        remaining = remaining - k
    assert schedule == [3, 3, 2]
    assert num_transfer_tokens(torch.tensor([0, 5]), 2).tolist() == [0, 3]
    with pytest.raises(ValueError, match="steps_left must be >= 1, got 0"):
        num_transfer_tokens(torch.tensor([1]), 0)


def test_sequential_commits_leftmost_masked() -> None:
    assert bits(commit_sequential(CONFIDENCE, MASKED, torch.tensor([2]), 0.85)) == "01100"


def test_static_commits_the_most_confident_masked() -> None:
    # position 0 is the most confident but already committed
    assert bits(commit_low_confidence_static(CONFIDENCE, MASKED, torch.tensor([2]), 0.85)) == "00101"


def test_dynamic_commits_everything_above_the_threshold() -> None:
    assert bits(commit_low_confidence_dynamic(CONFIDENCE, MASKED, torch.tensor([1]), 0.6)) == "00101"
    assert bits(commit_low_confidence_dynamic(CONFIDENCE, MASKED, torch.tensor([1]), 0.0)) == "01111"


def test_dynamic_commits_at_least_the_quota() -> None:
    assert bits(commit_low_confidence_dynamic(CONFIDENCE, MASKED, torch.tensor([1]), 0.99)) == "00100"
    assert bits(commit_low_confidence_dynamic(CONFIDENCE, MASKED, torch.tensor([3]), 0.99)) == "00111"


def test_rows_are_independent() -> None:
    confidence = torch.tensor([[0.1, 0.9, 0.5], [0.8, 0.1, 0.3]])
    masked = torch.ones(2, 3, dtype=torch.bool)
    commit = commit_low_confidence_static(confidence, masked, torch.tensor([1, 2]), 0.85)
    assert commit.tolist() == [[False, True, False], [True, False, True]]


def test_strategies_by_name() -> None:
    assert set(REMASKING_STRATEGIES) == {"sequential", "low_confidence_static", "low_confidence_dynamic"}
    assert remasking_strategy("sequential") is commit_sequential
    with pytest.raises(UserError, match="unknown remasking strategy 'random' \\(choose from sequential, "):
        remasking_strategy("random")
