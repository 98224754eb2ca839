"""What the engine accepts as an image: a file (DICOM, PNG, JPEG), a pydicom Dataset or an array."""

from __future__ import annotations

from pathlib import Path
from typing import Union

import numpy as np
import pydicom

from echo.data.preprocess import load_pixels
from echo.errors import UserError

ImageSource = Union[str, Path, pydicom.Dataset, np.ndarray]  # noqa: UP007 (a runtime alias)


def display_pixels(image: ImageSource) -> np.ndarray:
    """Float32 (H, W) in [0, 1]. An array is a display image: uint8 (0-255) or float in [0, 1]."""
    if isinstance(image, np.ndarray):
        if image.ndim != 2:
            raise UserError(f"an image array must be 2-D (height, width), got shape {image.shape}")
        if image.dtype == np.uint8:
            return image.astype(np.float32) / 255.0
        if not np.issubdtype(image.dtype, np.floating):
            raise UserError(f"an image array must be uint8 or float in [0, 1], got {image.dtype}")
        pixels = image.astype(np.float32)
        if not np.all(np.isfinite(pixels)) or pixels.min() < 0.0 or pixels.max() > 1.0:
            raise UserError("a float image array must hold finite values in [0, 1]")
        return pixels
    if isinstance(image, (str, Path, pydicom.Dataset)):
        return load_pixels(image)
    raise UserError(f"cannot read an image from a {type(image).__name__}")
