"""Which studies share a decoding pass, and their context rows made into one batch.

A pass decodes its B rows with one (B, T) forward per step, so the rows share one context length.
Images of different grids (aspect ratios) give rows of different lengths. With the "causal" prompt
layout (response blocks counted from each row's response start) they still share a pass: shorter
rows are left-padded to the longest, the pad keys hidden from every query
(echo.runtime.masks.padded), and each row's M-RoPE positions computed from its own ids
(echo.runtime.positions.left_padded_rope_index); every row's response then starts at the same
index and each row decodes as it would alone. The "block_causal" layout aligns blocks to absolute
positions, which padding would move, so there only rows of one context length share a pass.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from echo.chat import context_row
from echo.data.preprocess import PreprocessedImage
from echo.runtime.graphs import VisionGraph
from echo.runtime.manifest import VISION_GRAPH, ModelManifest
from echo.runtime.positions import left_padded_rope_index
from echo.runtime.session import PreparedContext
from echo.runtime.vision_inputs import Grid, shared_vision_inputs

PADDED_LAYOUTS = ("causal",)  # prompt layouts whose rows may be left-padded to a longer context


def plan_passes(lengths: Sequence[int], prompt_attention: str, max_batch: int) -> list[list[int]]:
    """Indices of the rows each pass decodes, at most max_batch per pass. "causal": any lengths
    together, ordered by length (stable) so a pass pads little; otherwise rows of one length."""
    if max_batch < 1:
        raise ValueError(f"max_batch must be >= 1, got {max_batch}")
    if prompt_attention in PADDED_LAYOUTS:
        groups = [sorted(range(len(lengths)), key=lengths.__getitem__)]
    else:
        by_length: dict[int, list[int]] = {}
        for index, length in enumerate(lengths):
            by_length.setdefault(length, []).append(index)
        groups = list(by_length.values())
    return [group[start : start + max_batch] for group in groups for start in range(0, len(group), max_batch)]


def left_pad(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[np.ndarray, tuple[int, ...]]:
    """Rows -> (B, longest) int64 ids, each row right-aligned after pad_id, and each row's pad count."""
    length = max(len(row) for row in rows)
    pads = tuple(length - len(row) for row in rows)
    ids = np.full((len(rows), length), pad_id, dtype=np.int64)
    for b, row in enumerate(rows):
        ids[b, pads[b] :] = row
    return ids, pads


def context_rows(grids: Sequence[Grid], manifest: ModelManifest) -> list[list[int]]:
    """Each image's context ids (the torch paths' row: echo.chat places the image in the prompt)."""
    merge, tokens = manifest.vision.merge_size, manifest.tokens
    return [
        context_row(
            t * h * w // merge**2,
            manifest.generation.prompt_ids,
            vision_start_id=tokens.vision_start,
            image_pad_id=tokens.image,
            vision_end_id=tokens.vision_end,
        )
        for t, h, w in grids
    ]


def image_features(
    images: Sequence[PreprocessedImage], vision: VisionGraph, manifest: ModelManifest
) -> np.ndarray:
    """(sum of the images' merged tokens, H) features, image by image. A slot-table graph takes
    every image in one call (its attention costs what the windows do, and the tables keep images
    apart); a graph with dense (N, N) segment masks (exports before the slot tables) costs the
    square of all its patches, so it takes one image per call."""
    geometry = manifest.vision
    dense = "window_segments" in vision.index_names
    calls = [[image] for image in images] if dense else [list(images)]
    features = [
        vision.run(
            _joined([image.pixel_values for image in call]),
            shared_vision_inputs(
                tuple(image.grid_thw for image in call), geometry.merge_size, geometry.window_patches
            ),
        )
        for call in calls
    ]
    return _joined(features)


def known_features(
    images: Sequence[PreprocessedImage],
    vision: VisionGraph,
    manifest: ModelManifest,
    known: dict[str, np.ndarray] | None,
) -> np.ndarray:
    """`image_features`, looked up first in `known` (an image's features by vision graph,
    PreparedImage.features) under this graph's sha256, and kept there when computed."""
    graph = manifest.files.get(VISION_GRAPH, "")
    features = None if known is None else known.get(graph)
    if features is None:
        features = image_features(images, vision, manifest)
        if known is not None and graph:
            known[graph] = features
    return features


def _joined(arrays: list[np.ndarray]) -> np.ndarray:
    """The arrays concatenated along their first axis; a single one as it is (not copied)."""
    return arrays[0] if len(arrays) == 1 else np.concatenate(arrays)


def prepare_context(
    images: Sequence[PreprocessedImage],
    vision: VisionGraph,
    embeddings: np.ndarray,
    manifest: ModelManifest,
    known: dict[str, np.ndarray] | None = None,
) -> PreparedContext:
    """One pass's rows: image features (`known_features`: read from `known` where this vision graph
    computed them already) placed into the embedded rows, rows left-padded to the longest where the
    layout allows, positions per row."""
    grids = [image.grid_thw for image in images]
    rows = context_rows(grids, manifest)
    layout = manifest.generation.prompt_attention
    if layout not in PADDED_LAYOUTS and len({len(row) for row in rows}) > 1:
        lengths = sorted({len(row) for row in rows})
        raise ValueError(f"{layout!r} prompts decode rows of one context length together, got {lengths}")
    geometry, tokens = manifest.vision, manifest.tokens
    features = known_features(images, vision, manifest, known)  # (sum n_b, H)
    pad_id = tokens.eos if tokens.pad is None else tokens.pad
    assert pad_id != tokens.image, "the pad token must not be the image token"
    ids, pads = left_pad(rows, pad_id)  # (B, C)
    embeds = embeddings[ids]  # (B, C, H)
    embeds[ids == tokens.image] = features.astype(embeds.dtype)  # row-major: image b's tokens in row b
    positions = left_padded_rope_index(rows, [[grid] for grid in grids], tokens.image, geometry.merge_size)
    return PreparedContext(ids, embeds, positions, pads if any(pads) else None)
