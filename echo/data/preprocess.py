"""Pixels in, the model's patch grid out: one path for training and inference (numpy + Pillow only).

`load_pixels` reads DICOM (Modality LUT / rescale, VOI LUT or window, MONOCHROME1 inverted,
compressed transfer syntaxes through the pylibjpeg plugins), PNG and JPEG into a float32 HxW
display image in [0, 1] (bright = dense bone).

`preprocess` reproduces transformers' `Qwen2VLImageProcessor` exactly for the same image replicated
to RGB: the [0, 1] image is quantised to uint8 (rounding), resized with Pillow's bicubic filter on
uint8 to `smart_resize`'s size (as the HF processor does), rescaled by 1/255, normalised with the
CLIP mean/std per channel, and cut into (grid_t*grid_h*grid_w, 3*temporal*patch*patch) rows in the
HF patch order (2x2 merge groups contiguous). The uint8 step is the HF processor's own precision;
doing the resize in float would differ from it by up to about one grey level.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from PIL import Image, UnidentifiedImageError
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_modality_lut, apply_voi_lut

from echo.errors import UserError

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
_DICOM_SUFFIXES = {".dcm", ".dicom", ".dic"}


class ImageReadError(UserError):
    """An image file that cannot be read or decoded (the message names the file and the reason)."""


class PreprocessConfigError(UserError):
    """A preprocessing configuration with an impossible value (the message names the field)."""


@dataclass(frozen=True)
class PreprocessConfig:
    """Resolution and normalisation of the vision input; saved as JSON with models and manifests."""

    min_pixels: int  # smallest resized area (pixels); images are scaled up to reach it
    max_pixels: int  # largest resized area; ~224*224 for the demo model, 2,250,000 for the paper's
    patch_size: int = 14
    merge_size: int = 2  # patches merged per side into one language-model token
    temporal_patch_size: int = 2  # frames per patch; a still image is duplicated
    image_mean: tuple[float, float, float] = CLIP_MEAN
    image_std: tuple[float, float, float] = CLIP_STD

    def __post_init__(self) -> None:
        for name in ("min_pixels", "max_pixels", "patch_size", "merge_size", "temporal_patch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise PreprocessConfigError(f"{name} must be a positive integer, got {value!r}")
        if self.min_pixels > self.max_pixels:
            raise PreprocessConfigError(
                f"min_pixels ({self.min_pixels}) must not exceed max_pixels ({self.max_pixels})"
            )
        if self.max_pixels < self.factor**2:
            raise PreprocessConfigError(
                f"max_pixels ({self.max_pixels}) must hold at least one {self.factor}x{self.factor} merged patch"
            )
        for name in ("image_mean", "image_std"):
            value = getattr(self, name)
            if (
                not isinstance(value, tuple)
                or len(value) != 3
                or not all(isinstance(v, (int, float)) for v in value)
            ):
                raise PreprocessConfigError(f"{name} must be three numbers (R, G, B), got {value!r}")
        if any(v <= 0 for v in self.image_std):
            raise PreprocessConfigError(f"image_std must be positive, got {self.image_std}")

    @property
    def factor(self) -> int:
        """Resized sides are multiples of this: one merged patch."""
        return self.patch_size * self.merge_size

    def resized_size(self, height: int, width: int) -> tuple[int, int]:
        return smart_resize(height, width, self.factor, self.min_pixels, self.max_pixels)

    def grid_thw(self, height: int, width: int) -> tuple[int, int, int]:
        resized_height, resized_width = self.resized_size(height, width)
        return 1, resized_height // self.patch_size, resized_width // self.patch_size

    def num_image_tokens(self, height: int, width: int) -> int:
        """Language-model tokens for one image of this size (patches after the merge)."""
        t, h, w = self.grid_thw(height, width)
        return t * h * w // self.merge_size**2

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["image_mean"] = list(self.image_mean)
        data["image_std"] = list(self.image_std)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PreprocessConfig:
        if not isinstance(data, Mapping):
            raise PreprocessConfigError(
                f"preprocessing config must be a JSON object, got {type(data).__name__}"
            )
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise PreprocessConfigError(f"unknown preprocessing config field(s): {', '.join(unknown)}")
        missing = [name for name in ("min_pixels", "max_pixels") if name not in data]
        if missing:
            raise PreprocessConfigError(f"preprocessing config is missing {', '.join(missing)}")
        values = dict(data)
        for name in ("image_mean", "image_std"):
            if name in values and isinstance(values[name], list):
                values[name] = tuple(values[name])
        return cls(**values)


@dataclass(frozen=True)
class PreprocessedImage:
    pixel_values: np.ndarray  # float32 (grid_t*grid_h*grid_w, 3*temporal*patch*patch)
    grid_thw: tuple[int, int, int]


def smart_resize(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """Qwen2-VL's resize rule: sides multiples of `factor`, area within [min, max], aspect kept."""
    if height < 1 or width < 1:
        raise ValueError(f"image must have positive size, got {height}x{width}")
    if max(height, width) / min(height, width) > 200:
        raise ValueError(
            f"absolute aspect ratio must be smaller than 200, got {max(height, width) / min(height, width)}"
        )
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def to_uint8(pixels: np.ndarray) -> np.ndarray:
    """The [0, 1] display image as 8-bit grey levels (rounded), the precision the resize works at."""
    return np.rint(np.clip(pixels, 0.0, 1.0) * 255.0).astype(np.uint8)


def preprocess(pixels: np.ndarray, config: PreprocessConfig) -> PreprocessedImage:
    if not isinstance(pixels, np.ndarray) or pixels.ndim != 2:
        shape = getattr(pixels, "shape", None)
        raise ValueError(f"pixels must be a 2-D (height, width) array, got shape {shape}")
    if not np.issubdtype(pixels.dtype, np.floating):
        raise ValueError(f"pixels must be floating point in [0, 1] (see load_pixels), got {pixels.dtype}")
    if not np.all(np.isfinite(pixels)):
        raise ValueError("pixels contain NaN or infinite values")
    height, width = pixels.shape
    resized_height, resized_width = config.resized_size(height, width)
    grey = Image.fromarray(to_uint8(pixels), mode="L")
    grey = grey.resize((resized_width, resized_height), resample=Image.Resampling.BICUBIC)
    scaled = np.asarray(grey, dtype=np.float64) * (1 / 255)

    p, m, t = config.patch_size, config.merge_size, config.temporal_patch_size
    grid_h, grid_w = resized_height // p, resized_width // p
    # (gh/m, m, p, gw/m, m, p) -> (gh/m, gw/m, m, m, p, p): merge groups contiguous, as HF orders them
    patches = scaled.reshape(grid_h // m, m, p, grid_w // m, m, p).transpose(0, 3, 1, 4, 2, 5)
    patches = patches.reshape(grid_h * grid_w, 1, 1, p * p)
    mean = np.asarray(config.image_mean, dtype=np.float64).reshape(1, 3, 1, 1)
    std = np.asarray(config.image_std, dtype=np.float64).reshape(1, 3, 1, 1)
    channels = ((patches.astype(np.float32) - mean.astype(np.float32)) / std.astype(np.float32)).astype(
        np.float32
    )
    values = np.broadcast_to(channels, (grid_h * grid_w, 3, t, p * p))  # (N, C, T, p*p)
    return PreprocessedImage(
        pixel_values=np.ascontiguousarray(values.reshape(grid_h * grid_w, 3 * t * p * p)),
        grid_thw=(1, grid_h, grid_w),
    )


def resize_to_grid(pixels: np.ndarray, config: PreprocessConfig) -> np.ndarray:
    """A [0, 1] float image resized to the size `config` chooses for it, as uint8 (what training
    caches for each study: echo.training.examples)."""
    height, width = config.resized_size(pixels.shape[0], pixels.shape[1])
    image = Image.fromarray(np.clip(pixels * 255.0 + 0.5, 0, 255).astype(np.uint8))
    return np.asarray(image.resize((width, height), Image.Resampling.BICUBIC), dtype=np.uint8)


def model_input(pixels: np.ndarray, config: PreprocessConfig) -> PreprocessedImage:
    """A [0, 1] float display image as the model saw images in training: resized to the grid as
    uint8 (`resize_to_grid`, the training cache), then `preprocess`.

    Not always `preprocess(pixels)`: the size rule is not idempotent when the area is pinned
    (min_pixels == max_pixels, the demo models' 224 x 224): a 256 x 236 image resizes to 224 x 196,
    which `preprocess` resizes again, to 252 x 224. Training always ran both steps, so a model
    trained so expects the second grid; serving `preprocess(pixels)` alone gave the bundled student
    the first one on every non-square study (one-step F1 0.41 instead of 0.53 on 382 validation studies)."""
    return preprocess(resize_to_grid(pixels, config).astype(np.float32) / 255.0, config)


def preprocess_dicom(source: str | Path | pydicom.Dataset, config: PreprocessConfig) -> PreprocessedImage:
    return model_input(load_pixels(source), config)


def _name(source: str | Path | pydicom.Dataset) -> str:
    if isinstance(source, pydicom.Dataset):
        return str(getattr(source, "filename", None) or "DICOM dataset")
    return str(source)


def load_pixels(source: str | Path | pydicom.Dataset) -> np.ndarray:
    """Float32 (H, W) in [0, 1], display orientation; raises ImageReadError naming the file."""
    if isinstance(source, pydicom.Dataset):
        return _dicom_pixels(source, _name(source))
    path = Path(source)
    if not path.is_file():
        raise ImageReadError(f"{path}: no such image file")
    try:
        with path.open("rb") as handle:
            head = handle.read(132)
    except OSError as error:
        raise ImageReadError(f"{path}: cannot read ({error.strerror or error})") from None
    if head[128:132] == b"DICM" or path.suffix.lower() in _DICOM_SUFFIXES:
        has_preamble = head[128:132] == b"DICM"
        try:
            dataset = pydicom.dcmread(path, force=not has_preamble)
        except (InvalidDicomError, OSError, ValueError, EOFError, AttributeError, KeyError) as error:
            raise ImageReadError(f"{path}: not a readable DICOM file ({error})") from None
        if not has_preamble and "PixelData" not in dataset:
            # forced reading accepts any bytes; without the DICM preamble and pixel data it is not DICOM
            raise ImageReadError(f"{path}: not a readable DICOM file (no DICM preamble, no pixel data)")
        return _dicom_pixels(dataset, str(path))
    return _bitmap_pixels(path)


def _dicom_pixels(ds: pydicom.Dataset, name: str) -> np.ndarray:
    if "PixelData" not in ds:
        raise ImageReadError(
            f"{name}: DICOM object has no pixel data (SOP class {ds.get('SOPClassUID', 'unknown')})"
        )
    try:
        raw = ds.pixel_array
    except Exception as error:  # decoders raise many types (missing plugin, corrupt codestream, bad length)
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ImageReadError(f"{name}: cannot decode pixel data ({reason})") from None
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raw = raw[0]  # a radiograph has one frame; take the first of a multi-frame object
    if photometric in ("MONOCHROME1", "MONOCHROME2"):
        return _monochrome(raw, ds, photometric == "MONOCHROME1", name)
    if photometric in ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_RCT", "YBR_ICT") and raw.ndim == 3:
        # pydicom converts YCbCr to RGB; a colour radiograph is read as its luminance
        maximum = float(2 ** int(ds.get("BitsStored", 8)) - 1)
        luma = raw[..., 0] * 0.299 + raw[..., 1] * 0.587 + raw[..., 2] * 0.114
        return np.clip(luma / maximum, 0.0, 1.0).astype(np.float32)
    raise ImageReadError(f"{name}: unsupported photometric interpretation {photometric}")


def _monochrome(raw: np.ndarray, ds: pydicom.Dataset, inverted: bool, name: str) -> np.ndarray:
    try:
        values = apply_modality_lut(raw, ds)
        if ds.get("VOILUTSequence"):
            if not np.issubdtype(values.dtype, np.integer) and np.all(values == np.rint(values)):
                values = values.astype(np.int64)  # the LUT indexes integer modality values
            out = apply_voi_lut(values, ds, prefer_lut=True).astype(np.float64)
            low, high = _lut_output_range(ds)
        elif "WindowCenter" in ds and "WindowWidth" in ds:
            out = apply_voi_lut(values, ds, prefer_lut=False).astype(np.float64)
            low, high = _window_output_range(ds)
        else:
            out = values.astype(np.float64)
            low, high = float(out.min()), float(out.max())
    except (ValueError, TypeError, IndexError, KeyError, AttributeError) as error:
        raise ImageReadError(f"{name}: cannot apply the DICOM grey-scale transforms ({error})") from None
    scaled = (out - low) / (high - low) if high > low else np.zeros_like(out)
    scaled = np.clip(scaled, 0.0, 1.0)
    if inverted:
        scaled = 1.0 - scaled
    return scaled.astype(np.float32)


def _lut_output_range(ds: pydicom.Dataset) -> tuple[float, float]:
    """The smallest and largest entry of the VOI LUT (its data may not span its nominal bit depth)."""
    descriptor = ds.VOILUTSequence[0].LUTDescriptor
    entries = int(descriptor[0]) or 65536
    first = int(descriptor[1])
    every_entry = apply_voi_lut(np.arange(first, first + entries, dtype=np.int64), ds, prefer_lut=True)
    return float(every_entry.min()), float(every_entry.max())


def _window_output_range(ds: pydicom.Dataset) -> tuple[float, float]:
    """The range pydicom's windowing maps onto (PS3.3 C.11.2.1.2: the modality output's range)."""
    bits = int(ds.BitsStored)
    if ds.get("ModalityLUTSequence"):
        return 0.0, float(2 ** int(ds.ModalityLUTSequence[0].LUTDescriptor[2]) - 1)
    low, high = (
        (0.0, 2.0**bits - 1)
        if int(ds.PixelRepresentation) == 0
        else (-(2.0 ** (bits - 1)), 2.0 ** (bits - 1) - 1)
    )
    if "RescaleSlope" in ds and "RescaleIntercept" in ds:
        slope, intercept = float(ds.RescaleSlope), float(ds.RescaleIntercept)
        low, high = sorted((low * slope + intercept, high * slope + intercept))
    return low, high


def _bitmap_pixels(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as image:
            image.load()
            if image.mode in ("I;16", "I;16B", "I;16L", "I"):
                values = np.asarray(image, dtype=np.float64)
                maximum = 65535.0 if image.mode != "I" or values.max() > 255 else 255.0
                return np.clip(values / maximum, 0.0, 1.0).astype(np.float32)
            if image.mode == "F":
                return np.clip(np.asarray(image, dtype=np.float32), 0.0, 1.0)
            grey = image.convert("L")
            return np.asarray(grey, dtype=np.float32) * np.float32(1 / 255)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as error:
        raise ImageReadError(f"{path}: not a DICOM, PNG or JPEG image ({error})") from None
