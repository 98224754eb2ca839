"""Which masked positions of a block to commit at a denoising step.

A strategy is a small pure function, picked by name once before the decoding loop:

    strategy(confidence (B, L), masked (B, L) bool, quota (B,), threshold) -> commit (B, L) bool

`quota` is how many positions a row must commit now so that its block completes within the step
budget (`num_transfer_tokens`); a strategy commits only masked positions.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from echo.errors import UserError

Strategy = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, float], torch.Tensor]


def num_transfer_tokens(remaining: torch.Tensor, steps_left: int) -> torch.Tensor:
    """ceil(remaining / steps_left) per row: spreading a block's masks evenly over the remaining
    steps, earlier steps taking the remainder (8 masks in 3 steps: 3, 3, 2)."""
    if steps_left < 1:
        raise ValueError(f"steps_left must be >= 1, got {steps_left}")
    return torch.div(remaining + steps_left - 1, steps_left, rounding_mode="floor")


def commit_sequential(
    confidence: torch.Tensor, masked: torch.Tensor, quota: torch.Tensor, threshold: float
) -> torch.Tensor:
    """The leftmost `quota` masked positions, whatever the model's confidence."""
    order = masked.long().cumsum(dim=1)  # 1-based rank of each masked position from the left
    return masked & (order <= quota[:, None])


def commit_low_confidence_static(
    confidence: torch.Tensor, masked: torch.Tensor, quota: torch.Tensor, threshold: float
) -> torch.Tensor:
    """The `quota` most confident masked positions (the rest stay masked: low-confidence remasking)."""
    return masked & (_confidence_rank(confidence, masked) < quota[:, None])


def commit_low_confidence_dynamic(
    confidence: torch.Tensor, masked: torch.Tensor, quota: torch.Tensor, threshold: float
) -> torch.Tensor:
    """Every masked position with confidence >= threshold; at least `quota` (which is >= 1 while
    masks remain), so the block still completes within the step budget."""
    confident = (masked & (confidence >= threshold)).sum(dim=1)
    count = torch.maximum(confident, quota)
    return masked & (_confidence_rank(confidence, masked) < count[:, None])


def commit_refine(
    confidence: torch.Tensor, masked: torch.Tensor, quota: torch.Tensor, threshold: float
) -> torch.Tensor:
    """Confidence-gated refinement, run with a budget of two steps: the first step commits every
    masked position with confidence >= threshold (at least the most confident one, so the second
    forward sees something new), the second commits the rest. A step whose quota is every
    remaining mask (the last step, or a block with one mask left) commits them all."""
    remaining = masked.sum(dim=1)
    confident = (masked & (confidence >= threshold)).sum(dim=1)
    count = torch.where(quota >= remaining, remaining, confident.clamp(min=1))
    return masked & (_confidence_rank(confidence, masked) < count[:, None])


REMASKING_STRATEGIES: dict[str, Strategy] = {
    "sequential": commit_sequential,
    "low_confidence_static": commit_low_confidence_static,
    "low_confidence_dynamic": commit_low_confidence_dynamic,
}


def remasking_strategy(name: str) -> Strategy:
    try:
        return REMASKING_STRATEGIES[name]
    except KeyError:
        raise UserError(
            f"unknown remasking strategy {name!r} (choose from {', '.join(REMASKING_STRATEGIES)})"
        ) from None


def _confidence_rank(confidence: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
    """0-based rank of each masked position by descending confidence (ties: leftmost first);
    unmasked positions rank after all masked ones."""
    scores = confidence.float().masked_fill(~masked, float("-inf"))
    order = scores.argsort(dim=1, descending=True, stable=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(order.shape[1], device=order.device).expand_as(order))
    return rank
