"""Training examples: (frontal image, report) pairs read once, preprocessed once, held in memory.

The expensive part of reading a study (DICOM decode, VOI LUT, resize) happens once per example and
is cached as a uint8 image at the model's input size in ``<cache_dir>/<key>.npz``; batches then only
normalise and patchify (``echo.data.preprocess.preprocess`` on an image that needs no resize).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.progress import Progress

from echo.data.manifest import read_manifest
from echo.data.preprocess import PreprocessConfig, load_pixels
from echo.errors import UserError


@dataclass(frozen=True)
class ExampleSet:
    ids: list[str]
    reports: list[str]
    images: list[np.ndarray]  # n arrays (H, W) uint8, each at its model input size (grids may differ)
    labels: list[dict[str, str]]

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, indices: Sequence[int]) -> ExampleSet:
        idx = list(indices)
        return ExampleSet(
            [self.ids[i] for i in idx],
            [self.reports[i] for i in idx],
            [self.images[i] for i in idx],
            [self.labels[i] for i in idx],
        )


def _resize_to_grid(pixels: np.ndarray, config: PreprocessConfig) -> np.ndarray:
    """Resize a [0, 1] float image to the size ``preprocess`` would choose, as uint8."""
    from PIL import Image

    height, width = config.resized_size(pixels.shape[0], pixels.shape[1])
    image = Image.fromarray(np.clip(pixels * 255.0 + 0.5, 0, 255).astype(np.uint8))
    return np.asarray(image.resize((width, height), Image.Resampling.BICUBIC), dtype=np.uint8)


def load_examples(
    manifest: Path,
    split: str | None,
    config: PreprocessConfig,
    cache_dir: Path | None = None,
    limit: int | None = None,
) -> ExampleSet:
    """Read a manifest's rows of one split (all rows when ``split`` is None) into memory."""
    if not manifest.is_file():
        raise UserError(f"manifest {manifest} does not exist")
    rows = [row for row in read_manifest(manifest) if split is None or row.split == split]
    if limit is not None:
        rows = rows[:limit]
    if not rows:
        raise UserError(f"manifest {manifest} has no rows in split {split!r}")
    key_source = json.dumps(
        [str(manifest.resolve()), split, limit, config.to_dict(), len(rows)], sort_keys=True
    )
    key = hashlib.sha256(key_source.encode()).hexdigest()[:16]
    cache = (cache_dir / f"{key}.npz") if cache_dir else None
    if cache is not None and cache.is_file():
        images = _read_cache(cache)
    else:
        root = manifest.parent
        resized = []
        with Progress(transient=True) as progress:
            task = progress.add_task(f"reading {split or 'all'} images", total=len(rows))
            for row in rows:
                resized.append(_resize_to_grid(load_pixels(root / row.frontal), config))
                progress.advance(task)
        images = resized
        if cache is not None:
            _write_cache(cache, images)
    return ExampleSet(
        [row.id for row in rows], [row.report for row in rows], images, [dict(row.labels) for row in rows]
    )


def shape_groups(images: Sequence[np.ndarray], indices: Sequence[int]) -> list[list[int]]:
    """`indices` split by image shape, order kept within each group: one batch needs one grid."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for index in indices:
        groups.setdefault(images[index].shape, []).append(index)
    return list(groups.values())


def _write_cache(path: Path, images: list[np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp.npz")  # concurrent runs never share a temp file
    shapes = np.array([image.shape for image in images], dtype=np.int64)
    np.savez(tmp, flat=np.concatenate([image.ravel() for image in images]), shapes=shapes)
    tmp.rename(path)


def _read_cache(path: Path) -> list[np.ndarray]:
    stored = np.load(path)
    flat, images, offset = stored["flat"], [], 0
    for height, width in stored["shapes"]:
        images.append(flat[offset : offset + height * width].reshape(height, width))
        offset += height * width
    return images
