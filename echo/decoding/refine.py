"""Confidence-gated refinement: one forward per block, and one more only where it is unsure.

Each block is predicted in one forward, as the one-step student does. Positions whose confidence
(the softmax probability of their argmax) is at least `threshold` are committed; if some are below
it, the block runs ONE more forward with the committed positions in place and the others masked,
and those take their new argmax. At least the most confident position is committed after the
first forward, so the second always sees something the first did not. A block costs one forward
when every position is confident and two otherwise: threshold 0 is the one-step decoder, threshold
1 refines nearly every block (a two-step schedule).
"""

from __future__ import annotations

from echo.decoding.blocks import decode_blocks
from echo.decoding.context import Context
from echo.decoding.remasking import commit_refine
from echo.decoding.result import DecodeResult
from echo.decodings import DEFAULT_REFINE_THRESHOLD
from echo.errors import UserError
from echo.model.vlm import EchoVLM


def decode_refine(
    model: EchoVLM,
    ctx: Context,
    block_size: int,
    max_new_tokens: int,
    threshold: float = DEFAULT_REFINE_THRESHOLD,
    return_logits: bool = False,
) -> DecodeResult:
    """At most two forwards per block (fused block KV cache, as the one-step decoder)."""
    check_refine_threshold(threshold)
    return decode_blocks(
        model,
        ctx,
        block_size,
        max_new_tokens,
        strategy=commit_refine,
        steps_per_block=2,
        threshold=threshold,
        fused=True,
        record_trajectory=False,
        return_logits=return_logits,
    )


def check_refine_threshold(threshold: float) -> None:
    if not 0.0 <= threshold <= 1.0:
        raise UserError(f"refine threshold must be within [0, 1], got {threshold}")
