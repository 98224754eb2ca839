"""The grid-dependent inputs of the vision graph, computed in numpy (a port of echo.model.vision).

The exported vision tower takes, besides the patches, the index tensors its window attention
needs; computing them here keeps every loop over images out of the graph, so one graph serves any
image grid and any number of images.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

Grid = tuple[int, int, int]


@dataclass(frozen=True)
class VisionInputs:
    """The vision graph's index inputs for one call (N patches, M = N / merge_unit merged tokens)."""

    patch_positions: np.ndarray  # (N, 2) int64: row and column of each patch, processor order
    window_index: np.ndarray  # (M,) int64: merged tokens listed window by window
    restore_index: np.ndarray  # (M,) int64: the inverse permutation, back to processor order
    window_segments: np.ndarray  # (N,) int64: window of each patch, in window order
    frame_segments: np.ndarray  # (N,) int64: frame of each patch (frames stay contiguous)

    def feeds(self) -> dict[str, np.ndarray]:
        return {
            "patch_positions": self.patch_positions,
            "window_index": self.window_index,
            "restore_index": self.restore_index,
            "window_segments": self.window_segments,
            "frame_segments": self.frame_segments,
        }


def patch_positions(grids: Sequence[Grid], merge_size: int) -> np.ndarray:
    """(N, 2) row and column of every patch, in the processor's merge-block-major order."""
    rows = []
    for t, h, w in grids:
        hh, ww = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
        shape = (h // merge_size, merge_size, w // merge_size, merge_size)
        hh = hh.reshape(shape).transpose(0, 2, 1, 3).reshape(-1)
        ww = ww.reshape(shape).transpose(0, 2, 1, 3).reshape(-1)
        rows.append(np.tile(np.stack([hh, ww], axis=-1), (t, 1)))
    return np.concatenate(rows).astype(np.int64)


def window_order(grids: Sequence[Grid], merge_size: int, window_patches: int) -> tuple[np.ndarray, list[int]]:
    """The merged-token order that lists tokens window by window, and each window's length.

    Windows are `window_patches // merge_size` merged tokens on a side, tiled from the top left of
    each frame; edge windows are partial."""
    side = window_patches // merge_size
    if side < 1:
        raise ValueError("a window must hold at least one merged token")
    order: list[np.ndarray] = []
    lengths: list[int] = []
    first = 0
    for t, h, w in grids:
        rows, cols = h // merge_size, w // merge_size
        index = np.arange(t * rows * cols).reshape(t, rows, cols)
        n_h, n_w = -(-rows // side), -(-cols // side)
        padded = np.pad(index, ((0, 0), (0, n_h * side - rows), (0, n_w * side - cols)), constant_values=-1)
        windows = padded.reshape(t, n_h, side, n_w, side).transpose(0, 1, 3, 2, 4).reshape(-1, side * side)
        valid = windows >= 0
        order.append(windows[valid] + first)
        lengths.extend(valid.sum(-1).tolist())
        first += t * rows * cols
    return np.concatenate(order).astype(np.int64), lengths


def vision_inputs(grids: Sequence[Grid], merge_size: int, window_patches: int) -> VisionInputs:
    """Everything the vision graph needs besides pixel_values, for these images in this order."""
    if not grids:
        raise ValueError("at least one image grid is needed")
    for grid in grids:
        t, h, w = grid
        if t < 1 or h < 1 or w < 1 or h % merge_size or w % merge_size:
            raise ValueError(
                f"image grid {list(grid)} is not a positive multiple of the merge size {merge_size}"
            )
    order, window_lengths = window_order(grids, merge_size, window_patches)
    unit = merge_size**2
    frame_lengths = [h * w for t, h, w in grids for _ in range(t)]
    return VisionInputs(
        patch_positions=patch_positions(grids, merge_size),
        window_index=order,
        restore_index=np.argsort(order).astype(np.int64),
        window_segments=_segments([length * unit for length in window_lengths]),
        frame_segments=_segments(frame_lengths),
    )


def _segments(lengths: list[int]) -> np.ndarray:
    """(sum(lengths),) int64: the index of the segment each position belongs to."""
    return np.repeat(np.arange(len(lengths), dtype=np.int64), lengths)
