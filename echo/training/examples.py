"""Training examples: (frontal image, report) pairs read once, preprocessed once.

The expensive part of reading a study (DICOM decode, VOI LUT, resize) happens once per example and
is cached as uint8 images resized to the grid (``echo.data.preprocess.resize_to_grid``):
``<cache_dir>/<key>.u8`` (the images' bytes one after another) and ``<key>.shapes.npy``; batches
then run ``echo.data.preprocess.preprocess`` on them, which, where the size rule is not idempotent
(a pinned area), resizes them once more: the engine serves raw images the same two steps
(``echo.data.preprocess.model_input``). The images are held in
memory, or, streamed (large sets), read from a memory map of the cache when a batch needs them.
Caches of the earlier layout (``<key>.npz``) are still read.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.progress import Progress

from echo.data.manifest import ManifestRow, read_manifest
from echo.data.preprocess import PreprocessConfig, load_pixels, resize_to_grid
from echo.errors import UserError

STREAM_ABOVE_BYTES = 2 * 2**30  # stream by default when the images could take more than this


class CachedImages(Sequence[np.ndarray]):
    """The images of one cache file as a sequence of (H, W) uint8 arrays: views of a read-only
    memory map (streamed: the pages are read when a batch touches them) or of one array in RAM."""

    def __init__(self, flat: np.ndarray, shapes: np.ndarray) -> None:
        self.flat = flat
        self.shapes = [(int(h), int(w)) for h, w in shapes]
        self.offsets = np.concatenate([[0], np.cumsum([h * w for h, w in self.shapes])]).tolist()

    def __len__(self) -> int:
        return len(self.shapes)

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        start, shape = self.offsets[index], self.shapes[index]
        return self.flat[start : start + shape[0] * shape[1]].reshape(shape)

    def __iter__(self) -> Iterator[np.ndarray]:
        return (self[i] for i in range(len(self)))


@dataclass(frozen=True)
class ExampleSet:
    ids: list[str]
    reports: list[str]
    # n arrays (H, W) uint8, each at its model input size (grids may differ): a list, or CachedImages
    images: Sequence[np.ndarray]
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


def split_rows(manifest: Path, split: str | None, limit: int | None = None) -> list[ManifestRow]:
    """A manifest's rows of one split (all rows when ``split`` is None), the first `limit` only."""
    if not manifest.is_file():
        raise UserError(f"manifest {manifest} does not exist")
    rows = [row for row in read_manifest(manifest) if split is None or row.split == split]
    if limit is not None:
        rows = rows[:limit]
    if not rows:
        raise UserError(f"manifest {manifest} has no rows in split {split!r}")
    return rows


def load_examples(
    manifest: Path,
    split: str | None,
    config: PreprocessConfig,
    cache_dir: Path | None = None,
    limit: int | None = None,
    stream: bool | None = None,
) -> ExampleSet:
    """Read a manifest's rows of one split (all rows when ``split`` is None).

    `stream`: keep the images in the memory-mapped cache, not in RAM (needs `cache_dir`); None
    streams when the rows could take more than STREAM_ABOVE_BYTES at the model's largest size."""
    rows = split_rows(manifest, split, limit)
    key_source = json.dumps(
        [str(manifest.resolve()), split, limit, config.to_dict(), len(rows)], sort_keys=True
    )
    key = hashlib.sha256(key_source.encode()).hexdigest()[:16]
    if stream is None:
        stream = cache_dir is not None and len(rows) * config.max_pixels > STREAM_ABOVE_BYTES
    if stream and cache_dir is None:
        raise UserError("streaming images needs an image cache directory (--cache-dir)")
    images: Sequence[np.ndarray]
    if cache_dir is None:
        images = list(_read_rows(manifest.parent, rows, split, config))
    else:
        raw, shapes = cache_dir / f"{key}.u8", cache_dir / f"{key}.shapes.npy"
        legacy = cache_dir / f"{key}.npz"
        if not (raw.is_file() and shapes.is_file()):
            source = (
                _read_legacy(legacy) if legacy.is_file() else _read_rows(manifest.parent, rows, split, config)
            )
            _write_cache(raw, shapes, source)
        stored = np.load(shapes)
        flat = np.memmap(raw, dtype=np.uint8, mode="r") if stream else np.fromfile(raw, dtype=np.uint8)
        images = CachedImages(flat, stored)
    return ExampleSet(
        [row.id for row in rows], [row.report for row in rows], images, [dict(row.labels) for row in rows]
    )


def shape_groups(images: Sequence[np.ndarray], indices: Sequence[int]) -> list[list[int]]:
    """`indices` split by image shape, order kept within each group: one batch needs one grid."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for index in indices:
        groups.setdefault(images[index].shape, []).append(index)
    return list(groups.values())


def _read_rows(root: Path, rows, split: str | None, config: PreprocessConfig) -> Iterator[np.ndarray]:
    """Each row's frontal image at its model input size, one at a time."""
    with Progress(transient=True) as progress:
        task = progress.add_task(f"reading {split or 'all'} images", total=len(rows))
        for row in rows:
            yield resize_to_grid(load_pixels(root / row.frontal), config)
            progress.advance(task)


def _write_cache(raw: Path, shapes: Path, images: Iterator[np.ndarray] | list[np.ndarray]) -> None:
    """Append the images' bytes to `raw` as they come (none held), then their shapes; each file
    is written to a temporary name and renamed, so concurrent runs never share a partial file."""
    raw.parent.mkdir(parents=True, exist_ok=True)
    tmp_raw = raw.with_name(f"{raw.name}.{os.getpid()}.tmp")
    tmp_shapes = shapes.with_name(f"{shapes.name}.{os.getpid()}.tmp.npy")
    sizes = []
    with tmp_raw.open("wb") as out:
        for image in images:
            out.write(np.ascontiguousarray(image, dtype=np.uint8).tobytes())
            sizes.append(image.shape)
    np.save(tmp_shapes, np.array(sizes, dtype=np.int64).reshape(-1, 2))
    tmp_raw.rename(raw)
    tmp_shapes.rename(shapes)


def _read_legacy(path: Path) -> list[np.ndarray]:
    """The images of an earlier cache file (``flat`` and ``shapes`` in one .npz)."""
    stored = np.load(path)
    return list(CachedImages(stored["flat"], stored["shapes"]))
