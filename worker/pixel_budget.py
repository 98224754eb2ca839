"""The pixel budget: how many bytes an image's pixels take once decoded, read from its header alone.

Rows x Columns x Number of Frames x Samples per Pixel x bytes per sample (Bits Allocated rounded
up to whole bytes). A compressed file can be small and decode to gigabytes; the worker reads this
before decoding and refuses what would not fit, instead of being killed by the OOM killer and
redelivered (`ECHO_MAX_PIXEL_MEGABYTES`).
"""

from __future__ import annotations

from pydicom import Dataset

MIB = 2**20


def _count(header: Dataset, keyword: str, default: int | None) -> int | None:
    """A positive integer attribute; `default` when absent; None when present but not usable."""
    if keyword not in header:
        return default
    try:
        raw = header[keyword].value  # converted on first access: a malformed value raises here
        if raw in (None, ""):
            return default
        value = int(raw)
    except (TypeError, ValueError, OverflowError):
        return None
    return value if value > 0 else None


def _factors(header: Dataset) -> tuple[int, int, int, int, int] | None:
    """Rows, columns, frames, samples, bytes per sample; None when one is present but unusable."""
    factors = (
        _count(header, "Rows", None),
        _count(header, "Columns", None),
        _count(header, "NumberOfFrames", 1),
        _count(header, "SamplesPerPixel", 1),
        _count(header, "BitsAllocated", 16),
    )
    if any(value is None for value in factors):
        return None
    rows, columns, frames, samples, bits = (int(value or 0) for value in factors)
    return rows, columns, frames, samples, (bits + 7) // 8


def decoded_bytes(header: Dataset) -> int | None:
    """The decoded size of the image's pixels; None when Rows or Columns is missing or unusable."""
    factors = _factors(header)
    if factors is None:
        return None
    rows, columns, frames, samples, sample_bytes = factors
    return rows * columns * frames * samples * sample_bytes


def pixel_budget_problem(header: Dataset, budget_bytes: int) -> str | None:
    """Why the image must not be decoded (one line: its sizes, no other header text), or None."""
    factors = _factors(header)
    if factors is None:
        return None  # the image reader says what is wrong with the header, in its own words
    rows, columns, frames, samples, sample_bytes = factors
    size = rows * columns * frames * samples * sample_bytes
    if size <= budget_bytes:
        return None
    return (
        f"the chosen image is too large to decode: {rows} x {columns} pixels x {frames} frame(s) x "
        f"{samples} sample(s) x {sample_bytes} byte(s) = {_size(size)}, over the "
        f"{_size(budget_bytes)} budget (ECHO_MAX_PIXEL_MEGABYTES)"
    )


def _size(n: int) -> str:
    return f"{n / MIB:.1f} MiB" if n >= MIB // 10 else f"{n} bytes"
