"""Tiny Qwen2.5-VL models built by transformers itself, to check ours against.

Helpers reach the tests as the `hf` fixture (a namespace), not by import, so the tests do not
depend on the directory pytest is started from."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

HF_IMAGE_TOKEN = 5
VISION_START, VISION_END = 3, 4


def hf_config(tie: bool = False):
    from transformers import Qwen2_5_VLConfig

    return Qwen2_5_VLConfig(
        text_config={
            "vocab_size": 48,
            "hidden_size": 64,
            "intermediate_size": 96,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "rms_norm_eps": 1e-6,
            "max_position_embeddings": 512,
            "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
            "bos_token_id": None,
            "eos_token_id": 1,
            "pad_token_id": 0,
        },
        vision_config={
            "depth": 3,
            "hidden_size": 32,
            "intermediate_size": 48,
            "num_heads": 2,
            "patch_size": 14,
            "temporal_patch_size": 2,
            "spatial_merge_size": 2,
            "window_size": 56,
            "fullatt_block_indexes": [1],
            "out_hidden_size": 64,
        },
        image_token_id=HF_IMAGE_TOKEN,
        video_token_id=6,
        vision_start_token_id=VISION_START,
        vision_end_token_id=VISION_END,
        tie_word_embeddings=tie,
    )


def build_hf_model(tie: bool = False, seed: int = 0):
    """A transformers model with every weight perturbed, so no parameter is a neutral 0 or 1."""
    from transformers import Qwen2_5_VLForConditionalGeneration

    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(hf_config(tie)).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.05)
    return model


def load_hf(directory: Path):
    """transformers' own loader, eager attention (independent of our SDPA path)."""
    from transformers import Qwen2_5_VLForConditionalGeneration

    model, info = Qwen2_5_VLForConditionalGeneration.from_pretrained(
        directory, output_loading_info=True, attn_implementation="eager"
    )
    return model.eval(), info


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint directory written by transformers' save_pretrained."""
    directory = tmp_path_factory.mktemp("hf_checkpoint")
    build_hf_model().save_pretrained(directory)
    return directory


def image_inputs(grids: list[list[int]], prefix: list[int], suffix: list[int], seed: int = 1):
    """pixel_values, grid, and (B, T) ids [prefix, vision_start, pads, vision_end, suffix] per image."""
    generator = torch.Generator().manual_seed(seed)
    grid = torch.tensor(grids)
    pixel_values = torch.randn(int(grid.prod(-1).sum()), 3 * 2 * 14 * 14, generator=generator)
    rows = []
    for t, h, w in grids:
        n = t * h * w // 4
        rows.append([*prefix, VISION_START, *([HF_IMAGE_TOKEN] * n), VISION_END, *suffix])
    return pixel_values, grid, torch.tensor(rows)


def hf_logits(model, ids: torch.Tensor, pixel_values: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """transformers' logits, its own M-RoPE positions included (from mm_token_type_ids)."""
    with torch.no_grad():
        return model(
            input_ids=ids,
            pixel_values=pixel_values,
            image_grid_thw=grid,
            mm_token_type_ids=(ids == HF_IMAGE_TOKEN).int(),
        ).logits


@pytest.fixture(scope="session")
def hf() -> SimpleNamespace:
    return SimpleNamespace(
        IMAGE_TOKEN=HF_IMAGE_TOKEN,
        build=build_hf_model,
        load=load_hf,
        image_inputs=image_inputs,
        logits=hf_logits,
    )
