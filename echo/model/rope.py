"""Rotary position embeddings: M-RoPE for the decoder, axial 2D RoPE for the vision blocks, and the
3D position ids of a [text, image, text] sequence (as transformers' `get_rope_index` for images).

Frequencies are computed on the fly from the config (no buffers), so a model built on the meta
device and filled from a checkpoint needs nothing re-initialised, and an ONNX trace folds them.
"""

from __future__ import annotations

import torch


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def inverse_frequencies(dim: int, theta: float, device: torch.device | None = None) -> torch.Tensor:
    """(dim/2,) float32: theta^(-2i/dim)."""
    return 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.float32, device=device) / dim))


def mrope_cos_sin(
    position_ids: torch.Tensor,
    head_dim: int,
    theta: float,
    mrope_section: tuple[int, int, int],
    dtype: torch.dtype,
) -> tuple[torch.Tensor, torch.Tensor]:
    """position_ids (3, B, T) -> cos, sin (B, T, head_dim): frequency section i rotates by axis i."""
    assert position_ids.dim() == 3 and position_ids.shape[0] == 3, (
        f"position_ids must be (3, B, T), got {tuple(position_ids.shape)}"
    )
    inv_freq = inverse_frequencies(head_dim, theta, position_ids.device)
    freqs = position_ids[..., None].float() * inv_freq  # (3, B, T, head_dim/2)
    sections = freqs.split(list(mrope_section), dim=-1)
    freqs = torch.cat([part[axis % 3] for axis, part in enumerate(sections)], dim=-1)  # (B, T, head_dim/2)
    emb = torch.cat((freqs, freqs), dim=-1)  # (B, T, head_dim)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x (B, heads, T, head_dim) rotated by cos/sin (B, T, head_dim)."""
    cos, sin = cos[:, None], sin[:, None]  # (B, 1, T, head_dim)
    return x * cos + rotate_half(x) * sin


def vision_cos_sin(
    hw_positions: torch.Tensor, head_dim: int, theta: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """hw_positions (N, 2) patch rows/columns -> cos, sin (N, head_dim) float32.

    A quarter of the head rotates with the row, a quarter with the column, and the pattern repeats
    for the second half (rotate_half pairs dimension i with i + head_dim/2)."""
    inv_freq = inverse_frequencies(head_dim // 2, theta, hw_positions.device)  # (head_dim/4,)
    freqs = hw_positions[..., None].float() * inv_freq  # (N, 2, head_dim/4)
    freqs = freqs.flatten(1)  # (N, head_dim/2): [row freqs, column freqs]
    emb = torch.cat((freqs, freqs), dim=-1)  # (N, head_dim)
    return emb.cos(), emb.sin()


def rope_index(
    input_ids: torch.Tensor, image_grid_thw: torch.Tensor | None, image_token_id: int, spatial_merge_size: int
) -> torch.Tensor:
    """(B, T) ids -> (3, B, T) M-RoPE positions.

    Text advances all three axes together. A run of image tokens takes the next grid from
    `image_grid_thw` (images are consumed in order, row by row) and gets (t, h, w) positions
    offset by the position the run starts at; text after it continues from the image's max + 1.
    """
    assert input_ids.dim() == 2, f"input_ids must be (B, T), got {tuple(input_ids.shape)}"
    batch, length = input_ids.shape
    positions = torch.zeros(3, batch, length, dtype=torch.long, device=input_ids.device)
    grids = iter(image_grid_thw.tolist() if image_grid_thw is not None else [])
    is_image = (input_ids == image_token_id).tolist()
    for row in range(batch):
        pieces: list[torch.Tensor] = []
        start = 0  # sequence index of the current run
        next_position = 0
        while start < length:
            image_run = is_image[row][start]
            end = start
            while end < length and is_image[row][end] == image_run:
                end += 1
            if image_run:
                try:
                    t, h, w = next(grids)
                except StopIteration:
                    raise ValueError(
                        "more image-token runs in input_ids than rows in image_grid_thw"
                    ) from None
                grid = (t, h // spatial_merge_size, w // spatial_merge_size)
                if end - start != grid[0] * grid[1] * grid[2]:
                    raise ValueError(
                        f"an image-token run of {end - start} tokens does not match its grid {list(grid)}"
                    )
                pieces.append(_grid_positions(grid, next_position, input_ids.device))
                next_position += max(grid[1], grid[2])  # == max position of the image + 1 for t=1
            else:
                run = torch.arange(end - start, device=input_ids.device) + next_position
                pieces.append(run.expand(3, -1))
                next_position += end - start
            start = end
        positions[:, row] = torch.cat(pieces, dim=1)
    return positions


def _grid_positions(grid: tuple[int, int, int], start: int, device: torch.device) -> torch.Tensor:
    t, h, w = grid
    tt, hh, ww = torch.meshgrid(
        torch.arange(t, device=device),
        torch.arange(h, device=device),
        torch.arange(w, device=device),
        indexing="ij",
    )
    return torch.stack([tt, hh, ww]).reshape(3, -1) + start  # (3, t*h*w)


def continue_positions(position_ids: torch.Tensor, count: int) -> torch.Tensor:
    """Text positions for `count` tokens appended after a sequence: (3, B, T) -> (3, B, count),
    each row continuing from its max + 1. The x_t and x_0 copies of a response take the same ones."""
    start = position_ids.amax(dim=(0, 2)) + 1  # (B,)
    steps = torch.arange(count, device=position_ids.device)
    return (start[:, None] + steps[None, :]).expand(3, -1, -1)  # (3, B, count)
