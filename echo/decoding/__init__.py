"""Decoders: AR greedy, multi-step block diffusion, one step per block, and one step per block with
confidence-gated refinement. Tokenizer-free: they take a prepared Context and return token ids in
a DecodeResult; the caller decodes text."""

from echo.decoding.ar import decode_ar
from echo.decoding.block_diffusion import decode_block_diffusion
from echo.decoding.context import (
    Context,
    build_context_ids,
    context_ids_for,
    image_token_count,
    prepare_context,
)
from echo.decoding.onestep import decode_onestep, decode_onestep_unfused
from echo.decoding.refine import decode_refine
from echo.decoding.remasking import REMASKING_STRATEGIES, num_transfer_tokens
from echo.decoding.result import BlockTrajectory, DecodeResult

__all__ = [
    "REMASKING_STRATEGIES",
    "BlockTrajectory",
    "Context",
    "DecodeResult",
    "build_context_ids",
    "context_ids_for",
    "decode_ar",
    "decode_block_diffusion",
    "decode_onestep",
    "decode_onestep_unfused",
    "decode_refine",
    "image_token_count",
    "num_transfer_tokens",
    "prepare_context",
]
