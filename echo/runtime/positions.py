"""M-RoPE position ids of a [text, image, text] context (a numpy port of echo.model.rope)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from functools import lru_cache

import numpy as np

from echo.runtime.vision_inputs import Grid

ROW_POSITIONS = 64  # distinct context rows whose positions row_positions keeps


def rope_index(
    input_ids: np.ndarray, grids: Sequence[Grid], image_token_id: int, merge_size: int
) -> np.ndarray:
    """(B, T) ids -> (3, B, T) int64 positions.

    Text advances all three axes together; a run of image tokens takes the next grid (images are
    consumed in order, row by row) and gets (t, h, w) positions offset by where the run starts;
    text after it continues from the image's max + 1."""
    if input_ids.ndim != 2:
        raise ValueError(f"input_ids must be (B, T), got shape {input_ids.shape}")
    batch, length = input_ids.shape
    positions = np.zeros((3, batch, length), dtype=np.int64)
    remaining: Iterator[Grid] = iter(grids)
    is_image = input_ids == image_token_id
    for row in range(batch):
        pieces: list[np.ndarray] = []
        start, next_position = 0, 0
        while start < length:
            image_run = bool(is_image[row, start])
            end = start
            while end < length and bool(is_image[row, end]) == image_run:
                end += 1
            if image_run:
                grid = next(remaining, None)
                if grid is None:
                    raise ValueError("more image-token runs in input_ids than image grids")
                t, h, w = grid[0], grid[1] // merge_size, grid[2] // merge_size
                if end - start != t * h * w:
                    raise ValueError(
                        f"an image-token run of {end - start} tokens does not match its grid {[t, h, w]}"
                    )
                tt, hh, ww = np.meshgrid(np.arange(t), np.arange(h), np.arange(w), indexing="ij")
                pieces.append(np.stack([tt, hh, ww]).reshape(3, -1) + next_position)
                next_position += max(h, w)
            else:
                run = np.arange(end - start) + next_position
                pieces.append(np.broadcast_to(run, (3, end - start)))
                next_position += end - start
            start = end
        positions[:, row] = np.concatenate(pieces, axis=1)
    return positions


def left_padded_rope_index(
    rows: Sequence[Sequence[int]], row_grids: Sequence[Sequence[Grid]], image_token_id: int, merge_size: int
) -> np.ndarray:
    """Rows of different lengths, left-padded to the longest -> (3, B, longest) int64 positions:
    each row's are rope_index of its own ids and grids, as if it were alone; a pad's is 0 (pads are
    never attended, so any position serves)."""
    if len(rows) != len(row_grids):
        raise ValueError(f"{len(rows)} rows but image grids for {len(row_grids)}")
    length = max(len(row) for row in rows)
    positions = np.zeros((3, len(rows), length), dtype=np.int64)
    for b, (row, grids) in enumerate(zip(rows, row_grids, strict=True)):
        own = row_positions(tuple(row), tuple(tuple(grid) for grid in grids), image_token_id, merge_size)
        positions[:, b, length - len(row) :] = own
    return positions


@lru_cache(maxsize=ROW_POSITIONS)
def row_positions(
    row: tuple[int, ...], grids: tuple[Grid, ...], image_token_id: int, merge_size: int
) -> np.ndarray:
    """(3, len(row)) positions of one context row, read-only: a row is the prompt around one
    image's tokens, so rows repeat as grids do and each is computed once."""
    positions = rope_index(np.asarray([row], dtype=np.int64), grids, image_token_id, merge_size)[:, 0]
    positions.flags.writeable = False
    return positions


def continue_positions(position_ids: np.ndarray, count: int) -> np.ndarray:
    """Text positions for `count` tokens appended after a sequence: (3, B, T) -> (3, B, count)."""
    start = position_ids.max(axis=(0, 2)) + 1  # (B,)
    steps = start[:, None] + np.arange(count)[None, :]  # (B, count)
    return np.broadcast_to(steps, (3, *steps.shape)).astype(np.int64)
