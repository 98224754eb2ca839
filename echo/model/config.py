"""The architecture of a Qwen2.5-VL-style checkpoint plus the few extras block diffusion needs.

One `config.json` serves transformers and us. We read model_type "qwen2_5_vl" in both layouts
transformers has used (text fields flat at the top, as the released Qwen2.5-VL and ECHO
checkpoints have them; or nested under "text_config", as transformers 5 writes them), and write
the nested one. Our extras ("mask_token_id", "block_size", "preprocess", "prompt_attention", the
special token ids) are extra top-level keys, which transformers carries along untouched. The vision
tower's section, "vision_config", is `echo.model.vision_config`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from echo.errors import UserError
from echo.model.vision_config import VisionConfig, default_preprocess, vision_from_hf_dict, vision_to_hf_dict

CONFIG_NAME = "config.json"
PREPROCESSOR_CONFIG_NAME = "preprocessor_config.json"
MODEL_TYPE = "qwen2_5_vl"
PROMPT_ATTENTIONS: tuple[str, ...] = ("causal", "block_causal")
ACTIVATIONS: tuple[str, ...] = ("silu", "gelu", "gelu_pytorch_tanh", "quick_gelu")


@dataclass
class EchoVLConfig:
    """A Qwen2.5-VL decoder (Qwen2 with M-RoPE) and vision tower, plus block-diffusion extras."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int  # grouped-query attention: n_heads / n_kv_heads queries share a K/V head
    vision: VisionConfig
    hidden_act: str = "silu"
    rms_norm_eps: float = 1e-6
    rope_theta: float = 1_000_000.0
    # M-RoPE: the head_dim/2 rotary frequencies are split into (temporal, height, width) sections;
    # text tokens have equal t/h/w positions, so for text it reduces to ordinary 1D RoPE.
    mrope_section: tuple[int, int, int] = (16, 24, 24)
    max_position_embeddings: int = 128_000
    tie_word_embeddings: bool = False  # lm_head shares embed_tokens' weight (and is not stored)
    initializer_range: float = 0.02
    # Special tokens. The prompt layout is [vision_start, image_pad x n, vision_end, prompt...].
    image_token_id: int = 151655
    video_token_id: int | None = 151656
    vision_start_token_id: int = 151652
    vision_end_token_id: int = 151653
    bos_token_id: int | None = None
    eos_token_id: int = 151645
    pad_token_id: int | None = None
    # Block diffusion extras (absent from plain Qwen2.5-VL checkpoints).
    mask_token_id: int | None = None  # the <|MASK|> token noisy positions hold
    block_size: int = 8  # response tokens denoised together
    # "causal": the context is processed causally and response blocks count from the response start.
    # "block_causal": the WHOLE sequence is cut into blocks (the released ECHO checkpoints); the last
    # partial prompt block is completed with masks and becomes the first generated block.
    prompt_attention: Literal["causal", "block_causal"] = "causal"
    preprocess: dict[str, Any] = field(default_factory=dict)  # image preprocessing (echo.data) as JSON

    def __post_init__(self) -> None:
        _check(self.hidden_size % self.num_attention_heads == 0, "hidden_size must divide into heads")
        _check(
            self.num_attention_heads % self.num_key_value_heads == 0,
            "num_attention_heads must be a multiple of num_key_value_heads",
        )
        _check(
            sum(self.mrope_section) * 2 == self.head_dim,
            f"mrope_section {list(self.mrope_section)} must sum to head_dim/2 = {self.head_dim // 2}",
        )
        _check(
            self.vision.out_hidden_size == self.hidden_size,
            f"vision out_hidden_size {self.vision.out_hidden_size} != text hidden_size {self.hidden_size}",
        )
        _check(
            self.vision.hidden_size % self.vision.num_heads == 0, "vision hidden_size must divide into heads"
        )
        _check(self.vision.head_dim % 4 == 0, "vision head_dim must be a multiple of 4 (2D rotary)")
        _check(
            all(0 <= i < self.vision.depth for i in self.vision.fullatt_block_indexes),
            f"fullatt_block_indexes {list(self.vision.fullatt_block_indexes)} outside 0..{self.vision.depth - 1}",
        )
        _check(
            self.vision.window_size >= self.vision.patch_size * self.vision.spatial_merge_size,
            "vision window_size (pixels) must cover at least one merged token",
        )
        for act in (self.hidden_act, self.vision.hidden_act):
            _check(
                act in ACTIVATIONS, f"unsupported activation {act!r} (supported: {', '.join(ACTIVATIONS)})"
            )
        _check(self.block_size >= 1, f"block_size must be >= 1, got {self.block_size}")
        _check(
            self.prompt_attention in PROMPT_ATTENTIONS,
            f"prompt_attention must be one of {', '.join(PROMPT_ATTENTIONS)}, got {self.prompt_attention!r}",
        )
        specials = {
            "image_token_id": self.image_token_id,
            "vision_start_token_id": self.vision_start_token_id,
            "vision_end_token_id": self.vision_end_token_id,
            "eos_token_id": self.eos_token_id,
            "mask_token_id": self.mask_token_id,
            "pad_token_id": self.pad_token_id,
        }
        for name, value in specials.items():
            _check(
                value is None or 0 <= value < self.vocab_size,
                f"{name} {value} outside the vocabulary (size {self.vocab_size})",
            )
        for key, ours in (
            ("patch_size", self.vision.patch_size),
            ("merge_size", self.vision.spatial_merge_size),
            ("temporal_patch_size", self.vision.temporal_patch_size),
        ):
            theirs = self.preprocess.get(key)
            _check(
                theirs is None or theirs == ours,
                f"preprocess {key}={theirs} disagrees with the vision tower ({ours})",
            )

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    # ---- construction ---------------------------------------------------------------------------

    @classmethod
    def tiny(cls, vocab_size: int = 64, **overrides: Any) -> EchoVLConfig:
        """A few-hundred-kilobyte model for tests and the demo: 2 text layers, 2 vision blocks.

        Special ids default to the fixed ids of our trained tokenizer (pad 0, eos 1, mask 2,
        vision_start 3, vision_end 4, image_pad 5). `vision=VisionConfig(...)` replaces the tower.
        """
        vision = VisionConfig(
            depth=2,
            hidden_size=32,
            intermediate_size=64,
            num_heads=2,
            patch_size=14,
            temporal_patch_size=2,
            spatial_merge_size=2,
            window_size=56,  # 2x2 merged tokens per window, so small images have several windows
            fullatt_block_indexes=(1,),
            out_hidden_size=overrides.get("hidden_size", 64),
        )
        base: dict[str, Any] = dict(
            vocab_size=vocab_size,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            vision=vision,
            rope_theta=10000.0,
            mrope_section=(2, 3, 3),
            max_position_embeddings=4096,
            pad_token_id=0,
            eos_token_id=1,
            mask_token_id=2,
            vision_start_token_id=3,
            vision_end_token_id=4,
            image_token_id=5,
            video_token_id=None,
        )
        base.update(overrides)
        if "preprocess" not in overrides:
            base["preprocess"] = default_preprocess(base["vision"])
        return cls(**base)

    def with_changes(self, **changes: Any) -> EchoVLConfig:
        return replace(self, **changes)

    # ---- config.json ----------------------------------------------------------------------------

    @classmethod
    def from_hf_dict(cls, data: dict[str, Any], preprocessor: dict[str, Any] | None = None) -> EchoVLConfig:
        """Read a qwen2_5_vl config dict in either layout; `preprocessor` (preprocessor_config.json)
        supplies "preprocess" when the config has none, as in plain Qwen2.5-VL checkpoints."""
        if data.get("model_type") != MODEL_TYPE:
            raise UserError(f"config.json has model_type {data.get('model_type')!r}, expected {MODEL_TYPE!r}")
        text = _TextFields(data)
        vision_data = data.get("vision_config")
        if not isinstance(vision_data, dict):
            raise UserError("config.json has no vision_config")
        vision = vision_from_hf_dict(vision_data)
        if text.get("use_sliding_window", False):
            raise UserError("config.json enables use_sliding_window, which this model does not implement")
        rope = text.get("rope_parameters") or {}
        rope_scaling = text.get("rope_scaling") or {}
        mrope = rope.get("mrope_section") or rope_scaling.get("mrope_section") or [16, 24, 24]
        preprocess = data.get("preprocess")
        if preprocess is None:
            preprocess = default_preprocess(vision, preprocessor)
        try:
            return cls(
                vocab_size=text.require("vocab_size"),
                hidden_size=text.require("hidden_size"),
                intermediate_size=text.require("intermediate_size"),
                num_hidden_layers=text.require("num_hidden_layers"),
                num_attention_heads=text.require("num_attention_heads"),
                num_key_value_heads=text.get("num_key_value_heads") or text.require("num_attention_heads"),
                vision=vision,
                hidden_act=text.get("hidden_act", "silu"),
                rms_norm_eps=float(text.get("rms_norm_eps", 1e-6)),
                rope_theta=float(rope.get("rope_theta", text.get("rope_theta", 1_000_000.0))),
                mrope_section=tuple(int(x) for x in mrope),  # type: ignore[arg-type]
                max_position_embeddings=int(text.get("max_position_embeddings", 128_000)),
                tie_word_embeddings=bool(
                    data.get("tie_word_embeddings", False) or text.nested("tie_word_embeddings", False)
                ),
                initializer_range=float(text.get("initializer_range", 0.02)),
                image_token_id=int(data.get("image_token_id", 151655)),
                video_token_id=data.get("video_token_id"),
                vision_start_token_id=int(data.get("vision_start_token_id", 151652)),
                vision_end_token_id=int(data.get("vision_end_token_id", 151653)),
                bos_token_id=_first_id(_top_then_text(data, text, "bos_token_id")),
                eos_token_id=_required_id(
                    _first_id(_top_then_text(data, text, "eos_token_id")), "eos_token_id"
                ),
                pad_token_id=_first_id(_top_then_text(data, text, "pad_token_id")),
                mask_token_id=data.get("mask_token_id"),
                block_size=int(data.get("block_size", 8)),
                prompt_attention=data.get("prompt_attention", "causal"),
                preprocess=dict(preprocess),
            )
        except (TypeError, ValueError) as error:
            raise UserError(f"config.json: {error}") from None

    def to_hf_dict(self) -> dict[str, Any]:
        """The config.json dict in transformers 5's layout (text fields under "text_config"), with
        the rope written both ways (5.x "rope_parameters"; 4.5x "rope_theta" + "rope_scaling"),
        the special ids at the top level, and our extras."""
        rope_scaling = {"type": "default", "rope_type": "default", "mrope_section": list(self.mrope_section)}
        text: dict[str, Any] = {
            "model_type": "qwen2_5_vl_text",
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "hidden_act": self.hidden_act,
            "rms_norm_eps": self.rms_norm_eps,
            "max_position_embeddings": self.max_position_embeddings,
            "initializer_range": self.initializer_range,
            "use_sliding_window": False,
            "attention_dropout": 0.0,
            "rope_theta": self.rope_theta,
            "rope_scaling": rope_scaling,
            "rope_parameters": {**rope_scaling, "rope_theta": self.rope_theta},
            "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_id,
            "pad_token_id": self.pad_token_id,
        }
        out: dict[str, Any] = {
            "architectures": ["Qwen2_5_VLForConditionalGeneration"],
            "model_type": MODEL_TYPE,
            "tie_word_embeddings": self.tie_word_embeddings,
            "text_config": text,
            "vision_config": vision_to_hf_dict(self.vision),
            "image_token_id": self.image_token_id,
            "vision_start_token_id": self.vision_start_token_id,
            "vision_end_token_id": self.vision_end_token_id,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_id,
            "pad_token_id": self.pad_token_id,
            "mask_token_id": self.mask_token_id,
            "block_size": self.block_size,
            "prompt_attention": self.prompt_attention,
            "preprocess": dict(self.preprocess),
        }
        if self.video_token_id is not None:
            out["video_token_id"] = self.video_token_id
        return out

    @classmethod
    def from_dir(cls, path: str | Path) -> EchoVLConfig:
        directory = Path(path)
        config_path = directory / CONFIG_NAME
        if not config_path.is_file():
            raise UserError(f"{directory}: no {CONFIG_NAME} (not a model checkpoint directory)")
        data = _read_json(config_path)
        preprocessor_path = directory / PREPROCESSOR_CONFIG_NAME
        preprocessor = _read_json(preprocessor_path) if preprocessor_path.is_file() else None
        return cls.from_hf_dict(data, preprocessor)

    def save(self, path: str | Path, dtype: str | None = None) -> Path:
        directory = Path(path)
        directory.mkdir(parents=True, exist_ok=True)
        data = self.to_hf_dict()
        if dtype is not None:
            data["dtype"] = dtype
        target = directory / CONFIG_NAME
        tmp = target.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")
        tmp.replace(target)
        return target


class _TextFields:
    """Text-model fields: "text_config" first (what transformers 5 reads), then the flat top level."""

    def __init__(self, data: dict[str, Any]) -> None:
        nested = data.get("text_config")
        self._nested: dict[str, Any] = nested if isinstance(nested, dict) else {}
        self._flat = data

    def get(self, key: str, default: Any = None) -> Any:
        if key in self._nested:
            return self._nested[key]
        return self._flat.get(key, default)

    def nested(self, key: str, default: Any = None) -> Any:
        return self._nested.get(key, default)

    def require(self, key: str) -> Any:
        value = self.get(key)
        if value is None:
            raise UserError(f"config.json lacks the text model field {key!r}")
        return value


def _top_then_text(data: dict[str, Any], text: _TextFields, key: str) -> Any:
    """Special ids: our top-level value wins over text_config's (transformers fills the latter
    with Qwen's defaults even for models with another vocabulary)."""
    return data[key] if key in data else text.nested(key)


def _first_id(value: Any) -> int | None:
    if isinstance(value, list):
        return int(value[0]) if value else None
    return None if value is None else int(value)


def _required_id(value: int | None, name: str) -> int:
    if value is None:
        raise UserError(f"config.json has no {name}")
    return value


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserError(f"{path}: cannot read JSON ({error})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object")
    return data


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)
