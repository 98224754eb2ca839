"""Multi-step block diffusion: the RAD teacher's decoder."""

from __future__ import annotations

from echo.decoding.blocks import decode_blocks
from echo.decoding.context import Context
from echo.decoding.remasking import remasking_strategy
from echo.decoding.result import DecodeResult
from echo.errors import UserError
from echo.model.vlm import EchoVLM


def decode_block_diffusion(
    model: EchoVLM,
    ctx: Context,
    block_size: int,
    max_new_tokens: int,
    remasking: str = "low_confidence_dynamic",
    steps_per_block: int | None = None,
    threshold: float = 0.85,
    record_trajectory: bool = False,
    return_logits: bool = False,
) -> DecodeResult:
    """Each block starts as masks and takes at most `steps_per_block` steps (default: block_size,
    one token per step); each step commits the positions the remasking strategy picks:
    "sequential" left to right, "low_confidence_static" the most confident, as many per step as
    the budget spreads evenly, "low_confidence_dynamic" every position with confidence >=
    `threshold` (at least the static count's floor that keeps the budget, so at least one).

    The completed block's KV is written in the next block's first step (fused). Stops at eos:
    the block holding it completes, tokens after it are dropped. With record_trajectory each
    row's blocks come back with their states, commit steps and commit-time distributions."""
    strategy = remasking_strategy(remasking)
    if not 0.0 <= threshold <= 1.0:
        raise UserError(f"threshold must be within [0, 1], got {threshold}")
    return decode_blocks(
        model,
        ctx,
        block_size,
        max_new_tokens,
        strategy=strategy,
        steps_per_block=block_size if steps_per_block is None else steps_per_block,
        threshold=threshold,
        fused=True,
        record_trajectory=record_trajectory,
        return_logits=return_logits,
    )
