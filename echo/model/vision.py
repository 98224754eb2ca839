"""The Qwen2.5-VL vision tower: patch embedding, ViT blocks with window or full attention and a
2D rotary embedding, and the patch merger that turns merge x merge patches into one LLM token.

Patches arrive in the image processor's order: merge-block-major (each group of `merge_unit`
consecutive rows of pixel_values is one future LLM token). Window attention reorders those groups
window by window, runs the blocks, merges, and restores the order.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from echo.model.layers import GatedMLP, RMSNorm
from echo.model.rope import rotate_half, vision_cos_sin
from echo.model.text import run_layer
from echo.model.vision_config import VisionConfig


class PatchEmbed(nn.Module):
    """A Conv3d with kernel = stride = (frames, patch, patch) on pre-cut patches: a linear map."""

    def __init__(self, config: VisionConfig) -> None:
        super().__init__()
        kernel = (config.temporal_patch_size, config.patch_size, config.patch_size)
        self.proj = nn.Conv3d(
            config.in_channels, config.hidden_size, kernel_size=kernel, stride=kernel, bias=False
        )

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        weight = self.proj.weight.flatten(1)  # (D, C*T*P*P), the same order as a pixel_values row
        return F.linear(pixel_values.to(weight.dtype), weight)  # (N, D)


@dataclass(frozen=True)
class Segments:
    """Independent attention segments of a flat patch sequence, gathered into padded rows.

    The same attention as a block-diagonal (N, N) mask (what the exported graph uses), at the cost of the
    segments alone: a batch of 16 images attends 16 x 256^2 pairs, not 4096^2.
    """

    index: torch.Tensor  # (S, L) int64: patch index of each row slot (0 in padding slots)
    valid: torch.Tensor  # (S, L) bool: slot holds a patch
    padded: bool  # some segment is shorter than L

    @classmethod
    def of(cls, lengths: list[int], device: torch.device) -> Segments:
        longest = max(lengths)
        starts = torch.tensor([0, *lengths[:-1]], device=device).cumsum(0)
        slots = torch.arange(longest, device=device)
        valid = slots[None, :] < torch.tensor(lengths, device=device)[:, None]
        index = torch.where(valid, starts[:, None] + slots[None, :], torch.zeros((), dtype=torch.long))
        return cls(index, valid, padded=min(lengths) != longest)


def segment_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, segments: Segments) -> torch.Tensor:
    """q, k, v (N, heads, hd) -> (N, heads, hd), attention within each segment only."""
    rows = [t[segments.index].transpose(1, 2) for t in (q, k, v)]  # (S, heads, L, hd)
    mask = segments.valid[:, None, None, :] if segments.padded else None  # padding keys hidden
    out = F.scaled_dot_product_attention(*rows, attn_mask=mask)  # (S, heads, L, hd)
    return out.transpose(1, 2)[segments.valid]  # (N, heads, hd): segments are contiguous, in order


class VisionAttention(nn.Module):
    def __init__(self, config: VisionConfig) -> None:
        super().__init__()
        self.num_heads = config.num_heads
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size, bias=True)
        self.proj = nn.Linear(config.hidden_size, config.hidden_size, bias=True)

    def forward(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, attend: torch.Tensor | Segments
    ) -> torch.Tensor:
        """`attend` is an (N, N) bool mask (the exported graph) or the Segments it would describe."""
        n = x.shape[0]
        q, k, v = self.qkv(x).view(n, 3, self.num_heads, -1).unbind(1)  # each (N, heads, hd)
        q, k = _rotate_vision(q, cos, sin), _rotate_vision(k, cos, sin)
        if isinstance(attend, Segments):
            return self.proj(segment_attention(q, k, v, attend).reshape(n, -1))
        q, k, v = (t.transpose(0, 1)[None] for t in (q, k, v))  # (1, heads, N, hd)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attend)  # (1, heads, N, hd)
        return self.proj(out[0].transpose(0, 1).reshape(n, -1))  # (N, D)


def _rotate_vision(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x (N, heads, hd) rotated in float32 by cos/sin (N, hd)."""
    dtype = x.dtype
    x = x.float()
    cos, sin = cos[:, None], sin[:, None]  # (N, 1, hd)
    return (x * cos + rotate_half(x) * sin).to(dtype)


class VisionBlock(nn.Module):
    def __init__(self, config: VisionConfig) -> None:
        super().__init__()
        self.norm1 = RMSNorm(config.hidden_size, eps=1e-6)
        self.norm2 = RMSNorm(config.hidden_size, eps=1e-6)
        self.attn = VisionAttention(config)
        self.mlp = GatedMLP(config.hidden_size, config.intermediate_size, config.hidden_act, bias=True)

    def forward(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, attend: torch.Tensor | Segments
    ) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), cos, sin, attend)
        return x + self.mlp(self.norm2(x))


class PatchMerger(nn.Module):
    """RMSNorm each patch, concatenate merge_unit neighbours, 2-layer GELU MLP to the text width."""

    def __init__(self, config: VisionConfig) -> None:
        super().__init__()
        self.merged_dim = config.hidden_size * config.merge_unit
        self.ln_q = RMSNorm(config.hidden_size, eps=1e-6)
        self.mlp = nn.Sequential(
            nn.Linear(self.merged_dim, self.merged_dim),
            nn.GELU(),
            nn.Linear(self.merged_dim, config.out_hidden_size),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.ln_q(x).view(-1, self.merged_dim))  # (N / merge_unit, out)


class VisionTower(nn.Module):
    def __init__(self, config: VisionConfig) -> None:
        super().__init__()
        self.config = config
        self.patch_embed = PatchEmbed(config)
        self.blocks = nn.ModuleList(VisionBlock(config) for _ in range(config.depth))
        self.gradient_checkpointing = False  # set by EchoVLM.gradient_checkpointing_enable
        self.merger = PatchMerger(config)

    def forward(self, pixel_values: torch.Tensor, grid_thw: torch.Tensor) -> torch.Tensor:
        """pixel_values (N, C*T*P*P), grid_thw (n_images, 3) in patches -> (N / merge_unit, out_hidden)."""
        cfg = self.config
        assert pixel_values.dim() == 2 and pixel_values.shape[1] == cfg.patch_dim, (
            f"pixel_values must be (N, {cfg.patch_dim}), got {tuple(pixel_values.shape)}"
        )
        assert grid_thw.dim() == 2 and grid_thw.shape[1] == 3, (
            f"image_grid_thw must be (n_images, 3), got {tuple(grid_thw.shape)}"
        )
        n = pixel_values.shape[0]
        assert int(grid_thw.prod(-1).sum()) == n, (
            f"image_grid_thw covers {int(grid_thw.prod(-1).sum())} patches, pixel_values has {n}"
        )
        unit = cfg.merge_unit
        order, window_lengths = window_order(
            grid_thw, cfg.spatial_merge_size, cfg.window_size // cfg.patch_size
        )
        device = pixel_values.device

        x = self.patch_embed(pixel_values)  # (N, D)
        x = x.view(n // unit, unit, -1)[order.to(device)].view(n, -1)  # window by window
        cos, sin = vision_cos_sin(
            patch_positions(grid_thw, cfg.spatial_merge_size).to(device), cfg.head_dim, cfg.rope_theta
        )
        cos = cos.view(n // unit, unit, -1)[order.to(device)].view(n, -1)
        sin = sin.view(n // unit, unit, -1)[order.to(device)].view(n, -1)

        frame_lengths = (grid_thw[:, 1] * grid_thw[:, 2]).repeat_interleave(grid_thw[:, 0])
        full = Segments.of(frame_lengths.tolist(), device)  # frames stay contiguous after reordering
        windowed = Segments.of([length * unit for length in window_lengths], device)
        for index, block in enumerate(self.blocks):
            attend = full if index in cfg.fullatt_block_indexes else windowed
            x = run_layer(block, self.gradient_checkpointing and self.training, x, cos, sin, attend)

        merged = self.merger(x)  # (N / unit, out), still window by window
        return merged[torch.argsort(order).to(device)]


def patch_positions(grid_thw: torch.Tensor, merge_size: int) -> torch.Tensor:
    """(N, 2) row and column of every patch, in the processor's merge-block-major order."""
    rows = []
    for t, h, w in grid_thw.tolist():
        hh, ww = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        shape = (h // merge_size, merge_size, w // merge_size, merge_size)
        hh = hh.reshape(shape).transpose(1, 2).flatten()
        ww = ww.reshape(shape).transpose(1, 2).flatten()
        rows.append(torch.stack([hh, ww], dim=-1).repeat(t, 1))
    return torch.cat(rows)


def window_order(
    grid_thw: torch.Tensor, merge_size: int, window_patches: int
) -> tuple[torch.Tensor, list[int]]:
    """The merged-token order that lists tokens window by window, and each window's length.

    Windows are `window_patches // merge_size` merged tokens on a side, tiled from the top left of
    each frame; edge windows are partial. Returns (order (N / merge_unit,), lengths in merged tokens).
    """
    side = window_patches // merge_size
    assert side >= 1, "a window must hold at least one merged token"
    order: list[torch.Tensor] = []
    lengths: list[int] = []
    first = 0
    for t, h, w in grid_thw.tolist():
        rows, cols = h // merge_size, w // merge_size
        index = torch.arange(t * rows * cols).view(t, rows, cols)
        n_h, n_w = -(-rows // side), -(-cols // side)
        padded = F.pad(index, (0, n_w * side - cols, 0, n_h * side - rows), value=-1)
        windows = padded.view(t, n_h, side, n_w, side).permute(0, 1, 3, 2, 4).reshape(-1, side * side)
        valid = windows >= 0  # (t * n_h * n_w, side * side)
        order.append(windows[valid] + first)
        lengths.extend(valid.sum(-1).tolist())
        first += t * rows * cols
    return torch.cat(order), lengths
