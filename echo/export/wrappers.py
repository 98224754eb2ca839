"""Export-friendly views of EchoVLM: modules whose forward takes and returns plain tensors only.

`VisionGraphModule` is VisionTower.forward with its grid loops lifted out: the window permutation,
its inverse, the patch positions and the attention segments arrive as inputs (computed by
echo.runtime.vision_inputs), so the graph has no shape-dependent Python and one graph serves any
grid. Attention runs per segment, as the tower's own `Segments` path does: q, k, v are gathered
into (segments, heads, L, L) attention by slot tables, padding keys masked, so a window block
costs N x L (L = the window's patches), never N x N; full-attention blocks use one segment per
frame. `DecoderGraphModule` is EchoVLM.forward with the KV cache flattened into per-layer inputs
and outputs, the last layer and the LM head run only at the positions asked for, plus the greedy
head decoding reads (argmax and its probability, mask excluded).
Both reuse the model's own submodules, so the numerics are the model's.
"""

from __future__ import annotations

import torch
from torch import nn

from echo.model.rope import vision_cos_sin
from echo.model.vision import VisionBlock, VisionTower, _rotate_vision
from echo.model.vlm import EchoVLM


class VisionGraphModule(nn.Module):
    def __init__(self, tower: VisionTower) -> None:
        super().__init__()
        self.tower = tower

    def forward(
        self,
        pixel_values: torch.Tensor,  # (N, patch_dim), processor order
        patch_positions: torch.Tensor,  # (N, 2) int64 row / column, processor order
        window_index: torch.Tensor,  # (M,) int64, M = N / merge_unit: merged tokens window by window
        restore_index: torch.Tensor,  # (M,) int64: inverse of window_index
        window_slots: torch.Tensor,  # (S_w, L_w) int64: patches of each window, -1 = padding
        window_places: torch.Tensor,  # (N,) int64: flat slot of each patch in window_slots
        frame_slots: torch.Tensor,  # (S_f, L_f) int64: patches of each frame, -1 = padding
        frame_places: torch.Tensor,  # (N,) int64: flat slot of each patch in frame_slots
    ) -> torch.Tensor:
        cfg = self.tower.config
        unit = cfg.merge_unit
        n = pixel_values.shape[0]
        x = self.tower.patch_embed(pixel_values)  # (N, D)
        x = x.view(n // unit, unit, -1)[window_index].view(n, -1)  # window by window
        cos, sin = vision_cos_sin(patch_positions, cfg.head_dim, cfg.rope_theta)  # (N, head_dim) float32
        cos = cos.view(n // unit, unit, -1)[window_index].view(n, -1)
        sin = sin.view(n // unit, unit, -1)[window_index].view(n, -1)
        for index, block in enumerate(self.tower.blocks):
            full = index in cfg.fullatt_block_indexes
            slots, places = (frame_slots, frame_places) if full else (window_slots, window_places)
            x = _block(block, x, cos, sin, slots, places)
        return self.tower.merger(x)[restore_index]  # (M, out_hidden), processor order


def _block(
    block: VisionBlock,
    x: torch.Tensor,  # (N, D)
    cos: torch.Tensor,
    sin: torch.Tensor,
    slots: torch.Tensor,
    places: torch.Tensor,
) -> torch.Tensor:
    """VisionBlock.forward with its attention over slot tables (the same weights and order)."""
    attn, n = block.attn, x.shape[0]
    q, k, v = attn.qkv(block.norm1(x)).view(n, 3, attn.num_heads, -1).unbind(1)  # each (N, heads, hd)
    q, k = _rotate_vision(q, cos, sin), _rotate_vision(k, cos, sin)
    x = x + attn.proj(slot_attention(q, k, v, slots, places).reshape(n, -1))
    return x + block.mlp(block.norm2(x))


def slot_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, slots: torch.Tensor, places: torch.Tensor
) -> torch.Tensor:
    """q, k, v (N, heads, hd) -> (N, heads, hd), attention within each row of `slots` only.

    Written out rather than F.scaled_dot_product_attention: its exported form masks the (S, heads,
    L, L) scores with Where and guards them with IsNaN, two more passes over the largest tensor
    (measured: most of a full block's time); an additive -inf bias on padding keys needs neither
    (every row holds a patch, so no query sees only padding). Softmax in float32, as Qwen's."""
    index = slots.clamp(min=0)
    q, k, v = (t[index].transpose(1, 2) for t in (q, k, v))  # (S, heads, L, hd)
    bias = torch.zeros(slots.shape, dtype=torch.float32).masked_fill(slots < 0, float("-inf"))
    scores = (q * q.shape[-1] ** -0.5) @ k.transpose(-1, -2)  # (S, heads, L, L)
    weights = (scores.float() + bias[:, None, None, :]).softmax(dim=-1).to(v.dtype)
    out = weights @ v  # (S, heads, L, hd)
    s, heads, length, hd = out.shape
    return out.transpose(1, 2).reshape(s * length, heads, hd)[places]  # (N, heads, hd)


class DecoderGraphModule(nn.Module):
    def __init__(self, model: EchoVLM) -> None:
        super().__init__()
        self.model = model
        self.num_layers = model.config.num_hidden_layers
        exclude = torch.zeros(model.config.vocab_size)
        if model.config.mask_token_id is not None:
            exclude[model.config.mask_token_id] = float("-inf")  # a committed token is never the mask
        self.register_buffer("exclude", exclude, persistent=False)

    def forward(
        self,
        inputs_embeds: torch.Tensor,  # (B, T, H)
        position_ids: torch.Tensor,  # (3, B, T) int64
        attention_mask: torch.Tensor,  # (B, T, P + T) bool, True = may attend
        logits_positions: torch.Tensor,  # (K,) int64: positions (< T) that get logits
        *past: torch.Tensor,  # past_key_0, past_value_0, ... each (B, n_kv_heads, P, head_dim)
    ) -> tuple[torch.Tensor, ...]:
        cache = [(past[2 * i], past[2 * i + 1]) for i in range(self.num_layers)]
        hidden, present = self.model.hidden_states(
            inputs_embeds, position_ids, attention_mask, cache, queries=logits_positions
        )  # (B, K, H): the last layer runs at the logits positions only
        logits = self.model.lm_head(hidden)  # (B, K, V)
        probs = (logits.float() + self.exclude).softmax(dim=-1)  # (B, T, V) float32
        top_probs, top_ids = probs.max(dim=-1)  # (B, K) each
        flat = [tensor for kv in present for tensor in kv]
        return (logits, top_ids, top_probs, *flat)
