"""The grid-dependent inputs of the vision graph, computed in numpy (a port of echo.model.vision).

The exported vision tower takes, besides the patches, the index tensors its window attention
needs; computing them here keeps every loop over images out of the graph, so one graph serves any
image grid and any number of images.

Attention segments (windows, frames) reach the graph as slot tables: `*_slots` (S, L) lists the
patches of each segment (window order, -1 in the padding of a shorter segment) and `*_places`
(N,) is where each patch lies in the flattened table. The graph gathers q, k, v into (S, heads,
L, L) attention, so its cost is that of the segments, not (N, N). Graphs exported before the
slot tables took `window_segments` / `frame_segments` (dense (N, N) masks in the graph); both are
computed here and a graph is fed the ones it names (`VisionInputs.feeds(names)`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from functools import lru_cache

import numpy as np

Grid = tuple[int, int, int]
SHARED_INPUTS = 64  # distinct grid lists kept by shared_vision_inputs (a few KB each)


@dataclass(frozen=True)
class VisionInputs:
    """The vision graph's index inputs for one call (N patches, M = N / merge_unit merged tokens)."""

    patch_positions: np.ndarray  # (N, 2) int64: row and column of each patch, processor order
    window_index: np.ndarray  # (M,) int64: merged tokens listed window by window
    restore_index: np.ndarray  # (M,) int64: the inverse permutation, back to processor order
    window_segments: np.ndarray  # (N,) int64: window of each patch, in window order
    frame_segments: np.ndarray  # (N,) int64: frame of each patch (frames stay contiguous)
    window_slots: np.ndarray  # (S_w, L_w) int64: patches of each window, -1 = padding
    window_places: np.ndarray  # (N,) int64: flat slot of each patch in window_slots
    frame_slots: np.ndarray  # (S_f, L_f) int64: patches of each frame, -1 = padding
    frame_places: np.ndarray  # (N,) int64: flat slot of each patch in frame_slots

    def feeds(self, names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """The index inputs by name; `names`: only those (a graph's inputs, pixel_values skipped)."""
        every = {
            "patch_positions": self.patch_positions,
            "window_index": self.window_index,
            "restore_index": self.restore_index,
            "window_segments": self.window_segments,
            "frame_segments": self.frame_segments,
            "window_slots": self.window_slots,
            "window_places": self.window_places,
            "frame_slots": self.frame_slots,
            "frame_places": self.frame_places,
        }
        return every if names is None else {name: every[name] for name in names if name in every}


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
    window_lengths = [length * unit for length in window_lengths]
    window_slots, window_places = segment_slots(window_lengths)
    frame_slots, frame_places = segment_slots(frame_lengths)
    return VisionInputs(
        patch_positions=patch_positions(grids, merge_size),
        window_index=order,
        restore_index=np.argsort(order).astype(np.int64),
        window_segments=_segments(window_lengths),
        frame_segments=_segments(frame_lengths),
        window_slots=window_slots,
        window_places=window_places,
        frame_slots=frame_slots,
        frame_places=frame_places,
    )


@lru_cache(maxsize=SHARED_INPUTS)
def shared_vision_inputs(grids: tuple[Grid, ...], merge_size: int, window_patches: int) -> VisionInputs:
    """vision_inputs, computed once per grid list and shared read-only by every call with it: a
    study's grid depends only on its aspect ratio (the preprocessing fixes the pixel count), so a
    node sees few, and recomputing the tables cost a report about a third of a millisecond."""
    inputs = vision_inputs(grids, merge_size, window_patches)
    for field in fields(inputs):
        getattr(inputs, field.name).flags.writeable = False
    return inputs


def segment_slots(lengths: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Contiguous segments of these lengths as a padded table: slots (S, max length) int64, the
    position of each slot's element (-1: padding), and places (sum(lengths),) int64, the flat
    slot of each position. For lengths [2, 1]: slots [[0, 1], [2, -1]], places [0, 1, 2]."""
    longest = max(lengths)
    counts = np.asarray(lengths, dtype=np.int64)
    offsets = np.arange(longest, dtype=np.int64)
    valid = offsets[None, :] < counts[:, None]  # (S, L)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    slots = np.where(valid, starts[:, None] + offsets[None, :], -1).astype(np.int64)
    places = np.flatnonzero(valid).astype(np.int64)  # row-major: segment by segment, in order
    return slots, places


def _segments(lengths: list[int]) -> np.ndarray:
    """(sum(lengths),) int64: the index of the segment each position belongs to."""
    return np.repeat(np.arange(len(lengths), dtype=np.int64), lengths)
