"""The vision tower's part of a Qwen2.5-VL-style config: the ViT's shape and the image preprocessing
its patches imply.

`VisionConfig` is config.json's "vision_config" section; `default_preprocess` gives the "preprocess"
dict (echo.data's image preprocessing) that a plain Qwen2.5-VL checkpoint leaves to
preprocessor_config.json. The top-level model config is `echo.model.config.EchoVLConfig`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

# The keys of the "preprocess" dict that the image preprocessing (echo.data) defines.
PREPROCESS_KEYS: tuple[str, ...] = (
    "min_pixels",
    "max_pixels",
    "patch_size",
    "merge_size",
    "temporal_patch_size",
    "image_mean",
    "image_std",
)
# max_pixels: Qwen2.5-VL's image processor allows 12.8 MP (28 * 28 * 16384); the ECHO paper feeds
# chest radiographs at 2,250,000 pixels, the default `echo-train init-from` sets for such a source.
QWEN_MAX_PIXELS = 12_845_056
CHEST_XRAY_MAX_PIXELS = 2_250_000
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


@dataclass
class VisionConfig:
    """The ViT of Qwen2.5-VL: patches of `patch_size`² x `temporal_patch_size` frames, window attention
    in most blocks, full attention in `fullatt_block_indexes`, then a 2x2 patch merger."""

    depth: int = 32
    hidden_size: int = 1280
    intermediate_size: int = 3420
    num_heads: int = 16
    in_channels: int = 3
    patch_size: int = 14
    temporal_patch_size: int = 2  # a still image is repeated over this many frames
    spatial_merge_size: int = 2  # merge_size x merge_size patches become one LLM token
    window_size: int = 112  # window side in PIXELS: window_size // (patch_size * merge_size) tokens
    fullatt_block_indexes: tuple[int, ...] = (7, 15, 23, 31)
    out_hidden_size: int = 3584  # merger output; must equal the text hidden_size
    hidden_act: str = "silu"
    rope_theta: float = 10000.0  # the 2D (h, w) rotary embedding of the vision blocks
    tokens_per_second: int = 2  # video only; kept so that a round trip preserves it

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def merge_unit(self) -> int:
        """Patches per merged token."""
        return self.spatial_merge_size**2

    @property
    def patch_dim(self) -> int:
        """Length of one row of pixel_values: channels x frames x patch x patch."""
        return self.in_channels * self.temporal_patch_size * self.patch_size**2


def vision_from_hf_dict(data: dict[str, Any]) -> VisionConfig:
    """A VisionConfig from config.json's "vision_config", in the released or transformers 5 spelling."""
    known = {f.name for f in fields(VisionConfig)}
    values = {k: v for k, v in data.items() if k in known and k != "rope_theta"}
    if "in_channels" not in values and "in_chans" in data:  # the released configs' spelling
        values["in_channels"] = data["in_chans"]
    if "patch_size" not in values and "spatial_patch_size" in data:
        values["patch_size"] = data["spatial_patch_size"]
    if "fullatt_block_indexes" in values:
        values["fullatt_block_indexes"] = tuple(int(i) for i in values["fullatt_block_indexes"])
    rope = data.get("rope_parameters") or {}
    if "rope_theta" in rope:
        values["rope_theta"] = float(rope["rope_theta"])
    return VisionConfig(**values)


def vision_to_hf_dict(vision: VisionConfig) -> dict[str, Any]:
    """config.json's "vision_config" section (the rope written as transformers 5's "rope_parameters")."""
    out = asdict(vision)
    out["fullatt_block_indexes"] = list(vision.fullatt_block_indexes)
    out["rope_parameters"] = {"rope_type": "axial", "rope_theta": out.pop("rope_theta")}
    return out


def default_preprocess(vision: VisionConfig, preprocessor: dict[str, Any] | None = None) -> dict[str, Any]:
    """The Qwen2.5-VL image processor defaults for this tower, overridden by a preprocessor_config.json."""
    out: dict[str, Any] = {
        "min_pixels": 56 * 56,
        "max_pixels": 28 * 28 * 1280,
        "patch_size": vision.patch_size,
        "merge_size": vision.spatial_merge_size,
        "temporal_patch_size": vision.temporal_patch_size,
        "image_mean": list(CLIP_MEAN),
        "image_std": list(CLIP_STD),
    }
    if preprocessor:
        size = preprocessor.get("size") or {}
        out.update({k: preprocessor[k] for k in PREPROCESS_KEYS if k in preprocessor})
        if "shortest_edge" in size:  # transformers >= 4.50 stores min/max pixels under "size"
            out["min_pixels"] = size["shortest_edge"]
        if "longest_edge" in size:
            out["max_pixels"] = size["longest_edge"]
    return out
