"""One forward per block: the DCD student's decoder.

Every mask position of a block takes its argmax in a single forward whose input is
[previous block, clean ; B masks]: the previous block's KV write rides along, and the context
prefill rides with block 0, so N blocks cost N forwards.
"""

from __future__ import annotations

from echo.decoding.blocks import decode_blocks
from echo.decoding.context import Context
from echo.decoding.remasking import commit_low_confidence_static
from echo.decoding.result import DecodeResult
from echo.model.vlm import EchoVLM


def decode_onestep(
    model: EchoVLM, ctx: Context, block_size: int, max_new_tokens: int, return_logits: bool = False
) -> DecodeResult:
    """N forwards for N blocks (fused block KV cache)."""
    return _onestep(model, ctx, block_size, max_new_tokens, fused=True, return_logits=return_logits)


def decode_onestep_unfused(
    model: EchoVLM, ctx: Context, block_size: int, max_new_tokens: int, return_logits: bool = False
) -> DecodeResult:
    """The two-pass reference (a forward to write each completed block's KV, one to denoise):
    2N forwards for N blocks. Used to prove the fused path computes the same thing."""
    return _onestep(model, ctx, block_size, max_new_tokens, fused=False, return_logits=return_logits)


def _onestep(
    model: EchoVLM, ctx: Context, block_size: int, max_new_tokens: int, *, fused: bool, return_logits: bool
) -> DecodeResult:
    # One step with a budget of one: the quota is every masked position, so all take their argmax.
    return decode_blocks(
        model,
        ctx,
        block_size,
        max_new_tokens,
        strategy=commit_low_confidence_static,
        steps_per_block=1,
        threshold=1.0,
        fused=fused,
        record_trajectory=False,
        return_logits=return_logits,
    )
