"""What every decoder returns."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class BlockTrajectory:
    """One row's multi-step decoding of one block: what DCD distils (the teacher's jointly decoded
    block and the states it passed through), not per-position marginals.

    Positions 0..prefix_len-1 are prompt tokens completing a partial prompt block (block-causal
    prompt mode only); they are never committed: commit_step -1 and an all-zero probs row."""

    start: int  # absolute sequence index of the block's first position
    prefix_len: int
    states: torch.Tensor  # (steps + 1, block_size) long: the block before each step, then the final block
    tokens: torch.Tensor  # (block_size,) long: the committed block (== states[-1])
    commit_step: torch.Tensor  # (block_size,) long: the step that committed each position
    probs: torch.Tensor  # (block_size, vocab) float16: the distribution each position was committed from


@dataclass
class DecodeResult:
    tokens: list[list[int]]  # per row: response ids, eos and everything after it dropped
    forwards: int  # model forward passes in this call (a batched pass counts once)
    seconds: float  # the whole call, vision encoding included
    prefill_seconds: float  # up to the end of the first forward (vision encoding + context prefill)
    steps_per_block: list[list[int]]  # per row, per block: denoising steps (AR: 1 per token)
    trajectory: list[list[BlockTrajectory]] | None = None  # per row, per block, when recorded
    # per row, when asked for: the logits of every forward over that row's window, stacked
    # (steps, window, vocab); AR's window is the one next token.
    logits: list[torch.Tensor] | None = None
    # per row, one per token in `tokens`: the softmax probability (mask token excluded) of the
    # token at the forward that committed it
    confidences: list[list[float]] | None = None
