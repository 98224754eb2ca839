"""A tiny random model with peaked, varied predictions, and contexts for it.

Helpers reach the tests as fixtures, not by import, so the tests do not depend on the directory
pytest is started from."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from echo.decoding import Context, prepare_context
from echo.model import EchoVLConfig, EchoVLM, block_causal_mask, continue_positions

PROMPT = [10, 11, 12]


def build_model(seed: int = 0, **overrides) -> EchoVLM:
    """initializer_range 0.4: random logits peaked enough that greedy output varies. The eos row
    of the head is zeroed (logit 0, never the max in practice), so runs go to max_new_tokens
    unless a test names another token eos."""
    torch.manual_seed(seed)
    model = EchoVLM(EchoVLConfig.tiny(vocab_size=48, initializer_range=0.4, **overrides)).eval()
    with torch.no_grad():
        model.lm_head.weight[model.config.eos_token_id] = 0.0
    return model


def build_context(model: EchoVLM, rows: int = 2, seed: int = 1, prompt: list[int] = PROMPT) -> Context:
    """rows images of 4x6 patches (6 image tokens each): C = 1 + 6 + 1 + len(prompt)."""
    generator = torch.Generator().manual_seed(seed)
    grid = torch.tensor([[1, 4, 6]] * rows)
    pixels = torch.randn(24 * rows, model.config.vision.patch_dim, generator=generator)
    return prepare_context(model, pixels, grid, prompt)


def uncached_window_logits(
    model: EchoVLM, ctx: Context, row: int, tail: list[int], block_size: int
) -> torch.Tensor:
    """(block_size, V): logits of the last block_size positions of [context row, tail] from ONE
    uncached forward under the block-causal mask the config implies; the reference for cached
    block decoding. `tail` is everything after the context up to the end of the window."""
    ids = ctx.input_ids[row : row + 1]
    context_len = ids.shape[1]
    grid = ctx.image_grid_thw[row : row + 1]
    patches = int(grid.prod())
    pixels = ctx.pixel_values[row * patches : (row + 1) * patches]
    with torch.no_grad():
        embeds = torch.cat(
            [model.embed(ids, pixels, grid), model.model.embed_tokens(torch.tensor([tail]))], dim=1
        )
        base = model.rope_index(ids, grid)
        positions = torch.cat([base, continue_positions(base, len(tail))], dim=2)
        offset = 0 if model.config.prompt_attention == "block_causal" else context_len
        mask = block_causal_mask(context_len + len(tail), block_size, 0, offset)
        logits, _ = model(embeds, positions, mask)
    return logits[0, -block_size:]


@pytest.fixture
def tiny() -> SimpleNamespace:
    return SimpleNamespace(
        model=build_model, context=build_context, uncached_window_logits=uncached_window_logits, PROMPT=PROMPT
    )
