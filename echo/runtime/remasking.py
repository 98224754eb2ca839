"""Which masked positions of a block to commit at a denoising step (a numpy port of
echo.decoding.remasking, with the same tie-breaking, so the engine commits the same tokens).

    strategy(confidence (B, L), masked (B, L) bool, quota (B,), threshold) -> commit (B, L) bool

`commit` calls a strategy, except when every row's quota covers all its masked positions (the
last step of a block's budget, so every step of the one-step decoder): then every strategy commits
them all, and no ranking is computed. Ranks come from pairwise comparisons of the block's L
positions (L = block size), not a sort.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

import numpy as np

from echo.errors import UserError

Strategy = Callable[[np.ndarray, np.ndarray, np.ndarray, float], np.ndarray]


def num_transfer_tokens(remaining: np.ndarray, steps_left: int) -> np.ndarray:
    """ceil(remaining / steps_left) per row (8 masks in 3 steps: 3, 3, 2)."""
    if steps_left < 1:
        raise ValueError(f"steps_left must be >= 1, got {steps_left}")
    return (remaining + steps_left - 1) // steps_left


def commit_sequential(
    confidence: np.ndarray, masked: np.ndarray, quota: np.ndarray, threshold: float
) -> np.ndarray:
    """The leftmost `quota` masked positions, whatever the model's confidence."""
    order = np.cumsum(masked, axis=1)
    return masked & (order <= quota[:, None])


def commit_low_confidence_static(
    confidence: np.ndarray, masked: np.ndarray, quota: np.ndarray, threshold: float
) -> np.ndarray:
    """The `quota` most confident masked positions."""
    return masked & (_confidence_rank(confidence, masked) < quota[:, None])


def commit_low_confidence_dynamic(
    confidence: np.ndarray, masked: np.ndarray, quota: np.ndarray, threshold: float
) -> np.ndarray:
    """Every masked position with confidence >= threshold, and at least `quota` of them."""
    confident = (masked & (confidence >= threshold)).sum(axis=1)
    count = np.maximum(confident, quota)
    return masked & (_confidence_rank(confidence, masked) < count[:, None])


def commit_refine(
    confidence: np.ndarray, masked: np.ndarray, quota: np.ndarray, threshold: float
) -> np.ndarray:
    """Confidence-gated refinement (budget two steps): first every masked position with
    confidence >= threshold, at least one; then, when quota is every remaining mask, all of them."""
    remaining = masked.sum(axis=1)
    confident = (masked & (confidence >= threshold)).sum(axis=1)
    count = np.where(quota >= remaining, remaining, np.maximum(confident, 1))
    return masked & (_confidence_rank(confidence, masked) < count[:, None])


def commit(
    strategy: Strategy, confidence: np.ndarray, masked: np.ndarray, quota: np.ndarray, threshold: float
) -> np.ndarray:
    """The positions `strategy` commits (a new array: the caller may update `masked` in place)."""
    if bool((quota >= masked.sum(axis=1)).all()):
        return masked.copy()
    return strategy(confidence, masked, quota, threshold)


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


def _confidence_rank(confidence: np.ndarray, masked: np.ndarray) -> np.ndarray:
    """0-based rank of each masked position by descending confidence (ties: leftmost first, as a
    stable sort orders them); unmasked positions rank after all masked ones.

    rank(i) = #{j : score j > score i} + #{j < i : score j == score i}, over the block's positions."""
    scores = np.where(masked, confidence.astype(np.float32), np.float32(-np.inf))  # (B, L)
    ahead = scores[:, None, :] > scores[:, :, None]  # (B, L, L): [b, i, j] = j is more confident
    tied_left = (scores[:, None, :] == scores[:, :, None]) & _left_of(scores.shape[1])
    return (ahead | tied_left).sum(axis=2)


@lru_cache(maxsize=8)
def _left_of(length: int) -> np.ndarray:
    """(L, L) bool: [i, j] = j < i."""
    return np.tri(length, length, -1, dtype=np.bool_)
