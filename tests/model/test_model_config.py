"""config.json in both layouts transformers has used, our extras, and the tiny constructor."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from echo.errors import UserError
from echo.model import EchoVLConfig, VisionConfig

# The released Qwen2.5-VL-7B-Instruct config.json (transformers 4.x layout: text fields flat).
QWEN25_VL_7B = {
    "architectures": ["Qwen2_5_VLForConditionalGeneration"],
    "attention_dropout": 0.0,
    "bos_token_id": 151643,
    "eos_token_id": 151645,
    "vision_start_token_id": 151652,
    "vision_end_token_id": 151653,
    "vision_token_id": 151654,
    "image_token_id": 151655,
    "video_token_id": 151656,
    "hidden_act": "silu",
    "hidden_size": 3584,
    "initializer_range": 0.02,
    "intermediate_size": 18944,
    "max_position_embeddings": 128000,
    "max_window_layers": 28,
    "model_type": "qwen2_5_vl",
    "num_attention_heads": 28,
    "num_hidden_layers": 28,
    "num_key_value_heads": 4,
    "rms_norm_eps": 1e-06,
    "rope_theta": 1000000.0,
    "sliding_window": 32768,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "transformers_version": "4.41.2",
    "use_cache": True,
    "use_sliding_window": False,
    "vision_config": {
        "depth": 32,
        "hidden_act": "silu",
        "hidden_size": 1280,
        "intermediate_size": 3420,
        "num_heads": 16,
        "in_chans": 3,
        "out_hidden_size": 3584,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "spatial_patch_size": 14,
        "window_size": 112,
        "fullatt_block_indexes": [7, 15, 23, 31],
        "tokens_per_second": 2,
        "temporal_patch_size": 2,
    },
    "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]},
    "vocab_size": 152064,
}


def test_released_flat_layout_reads() -> None:
    config = EchoVLConfig.from_hf_dict(QWEN25_VL_7B)
    assert (config.vocab_size, config.hidden_size, config.num_hidden_layers) == (152064, 3584, 28)
    assert (config.num_attention_heads, config.num_key_value_heads, config.head_dim) == (28, 4, 128)
    assert config.mrope_section == (16, 24, 24) and config.rope_theta == 1e6 and config.rms_norm_eps == 1e-6
    assert config.vision.fullatt_block_indexes == (7, 15, 23, 31) and config.vision.window_size == 112
    assert (config.vision.depth, config.vision.hidden_size, config.vision.in_channels) == (32, 1280, 3)
    assert (config.eos_token_id, config.image_token_id, config.bos_token_id) == (151645, 151655, 151643)
    # plain Qwen2.5-VL has no diffusion extras: defaults
    assert (config.mask_token_id, config.block_size, config.prompt_attention) == (None, 8, "causal")
    assert config.preprocess["max_pixels"] == 28 * 28 * 1280 and config.preprocess["patch_size"] == 14


def test_transformers5_nested_layout_reads(hf) -> None:
    data = hf.build().config.to_dict()
    assert "text_config" in data and "vocab_size" not in data  # what transformers 5 writes
    config = EchoVLConfig.from_hf_dict(data)
    assert (config.vocab_size, config.hidden_size, config.intermediate_size) == (48, 64, 96)
    assert (config.num_attention_heads, config.num_key_value_heads, config.mrope_section) == (4, 2, (2, 3, 3))
    assert config.rope_theta == 10000.0 and config.eos_token_id == 1 and config.pad_token_id == 0
    assert config.vision.depth == 3 and config.vision.fullatt_block_indexes == (1,)


def test_our_extras_round_trip_through_config_json(tmp_path: Path) -> None:
    config = EchoVLConfig.tiny(vocab_size=100, mask_token_id=7, block_size=4, prompt_attention="block_causal")
    config.save(tmp_path)
    data = json.loads((tmp_path / "config.json").read_text())
    assert (data["mask_token_id"], data["block_size"], data["prompt_attention"]) == (7, 4, "block_causal")
    assert data["text_config"]["rope_parameters"]["mrope_section"] == [2, 3, 3]
    assert EchoVLConfig.from_dir(tmp_path) == config


def test_transformers_reads_our_config_and_keeps_the_extras(tmp_path: Path) -> None:
    from transformers import AutoConfig

    EchoVLConfig.tiny(mask_token_id=2, block_size=4).save(tmp_path)
    theirs = AutoConfig.from_pretrained(tmp_path)
    assert theirs.text_config.hidden_size == 64 and theirs.text_config.num_key_value_heads == 2
    assert theirs.text_config.rope_parameters["mrope_section"] == [2, 3, 3]
    assert theirs.vision_config.window_size == 56 and list(theirs.vision_config.fullatt_block_indexes) == [1]
    assert (theirs.mask_token_id, theirs.block_size, theirs.preprocess["merge_size"]) == (2, 4, 2)


def test_preprocessor_config_supplies_preprocess_when_config_has_none(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps(QWEN25_VL_7B))
    (tmp_path / "preprocessor_config.json").write_text(
        json.dumps(
            {"min_pixels": 3136, "max_pixels": 12845056, "patch_size": 14, "image_mean": [0.5, 0.5, 0.5]}
        )
    )
    config = EchoVLConfig.from_dir(tmp_path)
    assert config.preprocess["max_pixels"] == 12845056 and config.preprocess["image_mean"] == [0.5, 0.5, 0.5]
    assert config.preprocess["merge_size"] == 2


def test_tiny_defaults_use_the_tokenizer_special_ids() -> None:
    config = EchoVLConfig.tiny()
    specials = (config.pad_token_id, config.eos_token_id, config.mask_token_id)
    vision = (config.vision_start_token_id, config.vision_end_token_id, config.image_token_id)
    assert specials == (0, 1, 2) and vision == (3, 4, 5)
    assert config.vision.patch_dim == 3 * 2 * 14 * 14 and config.preprocess["patch_size"] == 14


def test_wrong_model_type_is_a_user_error() -> None:
    with pytest.raises(UserError, match="model_type 'llama', expected 'qwen2_5_vl'"):
        EchoVLConfig.from_hf_dict({**QWEN25_VL_7B, "model_type": "llama"})


def test_missing_text_field_is_named() -> None:
    data = {k: v for k, v in QWEN25_VL_7B.items() if k != "num_hidden_layers"}
    with pytest.raises(UserError, match="lacks the text model field 'num_hidden_layers'"):
        EchoVLConfig.from_hf_dict(data)


def test_sliding_window_is_refused() -> None:
    with pytest.raises(UserError, match="use_sliding_window"):
        EchoVLConfig.from_hf_dict({**QWEN25_VL_7B, "use_sliding_window": True})


def test_inconsistent_config_is_a_user_error_naming_the_problem() -> None:
    with pytest.raises(UserError, match=r"mrope_section \[16, 24, 16\] must sum to head_dim/2 = 64"):
        EchoVLConfig.from_hf_dict(
            {**QWEN25_VL_7B, "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 16]}}
        )
    with pytest.raises(UserError, match="prompt_attention must be one of causal, block_causal"):
        EchoVLConfig.from_hf_dict({**QWEN25_VL_7B, "prompt_attention": "bidirectional"})
    with pytest.raises(UserError, match=r"mask_token_id 200000 outside the vocabulary \(size 152064\)"):
        EchoVLConfig.from_hf_dict({**QWEN25_VL_7B, "mask_token_id": 200000})


def test_preprocess_must_agree_with_the_vision_tower() -> None:
    with pytest.raises(ValueError, match=r"preprocess patch_size=16 disagrees with the vision tower \(14\)"):
        EchoVLConfig.tiny(preprocess={"patch_size": 16})


def test_vision_output_must_match_the_text_width() -> None:
    with pytest.raises(ValueError, match="vision out_hidden_size 32 != text hidden_size 64"):
        EchoVLConfig.tiny(
            vision=VisionConfig(
                depth=1, hidden_size=32, num_heads=2, out_hidden_size=32, fullatt_block_indexes=(0,)
            )
        )


def test_unreadable_config_json_is_a_user_error(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(UserError, match="cannot read JSON"):
        EchoVLConfig.from_dir(tmp_path)
