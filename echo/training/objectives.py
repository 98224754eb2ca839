"""The three stages' losses, each a pure function of (model, batch).

Row layouts (C context tokens, R response tokens, B block size):
- AR:  [context][response]             causal mask; logits at i predict token i + 1.
- RAD: [context][x_t][x_0]             `rad_training_mask`; logits at x_t positions predict x_0 there.
  With prompt_attention "block_causal" blocks are aligned to absolute positions (as the decoders
  cut them): the last p = C % B context tokens open the first response block and are copied at the
  head of both x_t and x_0 ([context][ctx tail, x_t][ctx tail, x_0]); noise is drawn per absolute
  block, so the first response block holds B - p tokens. "causal" (p = 0) is the layout as before.
- full duplication (baseline only): [x_t of context+response][x_0 of context+response].
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from echo.model.masks import causal_mask, full_duplication_mask, rad_training_mask, response_prefix_len
from echo.training.batches import Batch


@dataclass(frozen=True)
class NoiseConfig:
    block_size: int
    mask_id: int
    eps: float = 1e-3  # t ~ U(eps, 1) per block


def _logits(
    model,
    ids: torch.Tensor,
    batch: Batch,
    positions: torch.Tensor,
    mask: torch.Tensor,
    features: torch.Tensor | None = None,
) -> torch.Tensor:
    embeds = model.embed(ids, batch.pixel_values, batch.image_grid_thw, image_features=features)
    attention = mask.unsqueeze(0).expand(ids.shape[0], -1, -1)
    logits, _ = model(embeds, positions, attention, None)
    return logits


def _positions(model, batch: Batch) -> torch.Tensor:
    """M-RoPE ids of [context][response]: (3, b, C + R)."""
    ids = torch.cat([batch.context_ids, batch.response_ids], dim=1)
    return model.rope_index(ids, batch.image_grid_thw)


def ar_loss(model, batch: Batch, features: torch.Tensor | None = None) -> torch.Tensor:
    """Next-token cross-entropy on the response; `features` are the batch's image features when
    the caller has already run the vision tower (the findings probe reads them too)."""
    context_len = batch.context_ids.shape[1]
    ids = torch.cat([batch.context_ids, batch.response_ids], dim=1)
    logits = _logits(model, ids, batch, _positions(model, batch), causal_mask(ids.shape[1]), features)
    predicted = logits[:, context_len - 1 : -1]  # (b, R, V): position i predicts token i + 1
    return F.cross_entropy(predicted[batch.response_mask], batch.response_ids[batch.response_mask])


def prefix_len(model, batch: Batch, block_size: int) -> int:
    """Context tokens that open the first response block (0 unless prompt_attention is block_causal)."""
    return response_prefix_len(batch.context_ids.shape[1], block_size, model.config.prompt_attention)


def live_blocks(batch: Batch, block_size: int, prefix: int = 0) -> torch.Tensor:
    """(b, R) bool: positions in blocks up to and including the one that holds the first eos.

    Trailing blocks made only of batch padding carry no signal for the row and are left out.
    Blocks are aligned to absolute positions: the first holds B - `prefix` response tokens.
    """
    length = batch.response_mask.sum(dim=1, keepdim=True)  # report tokens + first eos
    last_block_end = (prefix + length + block_size - 1) // block_size * block_size - prefix
    positions = torch.arange(batch.response_ids.shape[1], device=length.device).unsqueeze(0)
    return positions < last_block_end


def sample_noise(
    batch: Batch, noise: NoiseConfig, generator: torch.Generator | None = None, prefix: int = 0
) -> torch.Tensor:
    """(b, R) bool: which response positions are masked; t ~ U(eps, 1) drawn per block.

    Blocks are aligned to absolute positions (the first holds B - `prefix` response tokens). The
    draws are made on the CPU (one stream whatever the device) and moved to the batch's device."""
    b, r = batch.response_ids.shape
    n_blocks = -(-(prefix + r) // noise.block_size)
    t = noise.eps + (1 - noise.eps) * torch.rand((b, n_blocks), generator=generator)
    t = t[:, (prefix + torch.arange(r)) // noise.block_size]  # (b, R): each position its block's t
    return (torch.rand((b, r), generator=generator) < t).to(batch.response_ids.device)


def rad_logits(model, batch: Batch, noisy: torch.Tensor, mask_id: int, block_size: int) -> torch.Tensor:
    """Logits at the x_t response positions, (b, R, V), for the response-only duplicated row.

    The row is [context][ctx tail, x_t][ctx tail, x_0] with the ctx tail the p context tokens of
    the first response block (p = 0 for a causal prompt). The context is embedded once (its images
    encoded once) and the tail copies take its embeddings."""
    context_len, response_len = batch.context_ids.shape[1], batch.response_ids.shape[1]
    prefix = prefix_len(model, batch, block_size)
    shared = context_len - prefix
    x_t = torch.where(noisy, torch.full_like(batch.response_ids, mask_id), batch.response_ids)
    context = model.embed(batch.context_ids, batch.pixel_values, batch.image_grid_thw)  # (b, C, H)
    head = context[:, shared:]
    embeds = torch.cat([context, model.embed(x_t), head, model.embed(batch.response_ids)], dim=1)
    base = _positions(model, batch)  # (3, b, C + R)
    positions = torch.cat([base, base[:, :, shared:]], dim=2)  # both tails share the tail's positions
    mask = rad_training_mask(context_len, response_len, block_size, model.config.prompt_attention)
    attention = mask.unsqueeze(0).expand(embeds.shape[0], -1, -1)
    logits, _ = model(embeds, positions, attention, None)
    return logits[:, context_len : context_len + response_len]


def rad_loss(
    model, batch: Batch, noise: NoiseConfig, generator: torch.Generator | None = None
) -> torch.Tensor:
    prefix = prefix_len(model, batch, noise.block_size)
    live = live_blocks(batch, noise.block_size, prefix)
    noisy = sample_noise(batch, noise, generator, prefix) & live
    if not noisy.any():
        noisy = live
    logits = rad_logits(model, batch, noisy, noise.mask_id, noise.block_size)
    return F.cross_entropy(logits[noisy], batch.response_ids[noisy])


def full_duplication_loss(
    model, batch: Batch, noise: NoiseConfig, generator: torch.Generator | None = None
) -> torch.Tensor:
    """The prior conversion's row: the whole sequence duplicated; only used to measure the saving."""
    context_len = batch.context_ids.shape[1]
    prefix = prefix_len(model, batch, noise.block_size)
    live = live_blocks(batch, noise.block_size, prefix)
    noisy = sample_noise(batch, noise, generator, prefix) & live
    x_t = torch.where(noisy, torch.full_like(batch.response_ids, noise.mask_id), batch.response_ids)
    clean = torch.cat([batch.context_ids, batch.response_ids], dim=1)
    noised = torch.cat([batch.context_ids, x_t], dim=1)
    ids = torch.cat([noised, clean], dim=1)
    base = _positions(model, batch)
    positions = torch.cat([base, base], dim=2)
    causal_part = context_len if model.config.prompt_attention == "causal" else 0
    mask = full_duplication_mask(clean.shape[1], noise.block_size, context_len=causal_part)
    embeds = _embed_twice(model, ids, batch)
    logits, _ = model(embeds, positions, mask.unsqueeze(0).expand(ids.shape[0], -1, -1), None)
    logits = logits[:, context_len : clean.shape[1]]  # the response part of the x_t copy
    if not noisy.any():
        noisy = live
    return F.cross_entropy(logits[noisy], batch.response_ids[noisy])


def _embed_twice(model, ids: torch.Tensor, batch: Batch) -> torch.Tensor:
    """Embed a row that holds the image placeholders twice: the vision tower runs once per image."""
    b = ids.shape[0]
    features = model.encode_images(batch.pixel_values, batch.image_grid_thw)  # (b * n_tokens, H)
    rows = features.view(b, features.shape[0] // b, -1)
    embeds = model.embed(ids, None, None).clone()
    image_positions = ids == _image_pad_id(model)
    for row in range(b):
        where = image_positions[row].nonzero().squeeze(1)
        assert where.numel() == 2 * rows.shape[1], f"expected two image copies, found {where.numel()} pads"
        embeds[row, where] = torch.cat([rows[row], rows[row]]).to(embeds.dtype)
    return embeds


def _image_pad_id(model) -> int:
    return int(model.config.image_token_id)
