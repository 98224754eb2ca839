"""A tiny random student, exported once per test session, its torch twin, and helpers that run
the torch decoders on exactly the engine's inputs.

The export is tests/conftest.py's `tiny_random_export`, which tests/export shares, so the two
folders pay for one export (one per run, xdist workers included). Helpers reach the tests as
fixtures, not by import."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

from echo.data.preprocess import PreprocessConfig, PreprocessedImage, preprocess
from echo.decoding import (
    Context,
    build_context_ids,
    decode_ar,
    decode_block_diffusion,
    decode_onestep,
    decode_refine,
)
from echo.runtime import Engine
from echo.training.checkpoint import load_checkpoint

# Shapes that give three different grids under the tiny preprocessing (at most 112 x 168 pixels).
IMAGE_SHAPES = ((200, 180), (256, 300), (90, 120))


def random_images(seed: int, shapes=IMAGE_SHAPES) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.random(shape).astype(np.float32) for shape in shapes]


def torch_decode(
    model, tokenizer, prompt: str, images: list[PreprocessedImage], decode: str, max_new: int, **options
):
    """The torch decoder's DecodeResult for preprocessed images of one grid (one row each)."""
    merge = model.config.vision.spatial_merge_size
    t, h, w = images[0].grid_thw
    row = build_context_ids(
        t * h * w // merge**2,
        tokenizer.encode(prompt),
        vision_start_id=model.config.vision_start_token_id,
        image_pad_id=model.config.image_token_id,
        vision_end_id=model.config.vision_end_token_id,
    )
    context = Context(
        torch.tensor([row] * len(images)),
        torch.from_numpy(np.concatenate([image.pixel_values for image in images])),
        torch.tensor([image.grid_thw for image in images]),
    )
    block = model.config.block_size
    if decode == "ar":
        return decode_ar(model, context, max_new)
    if decode == "onestep":
        return decode_onestep(model, context, block, max_new)
    if decode == "refine":
        return decode_refine(model, context, block, max_new, **options)
    return decode_block_diffusion(model, context, block, max_new, **options)


def with_config(model, **changes: Any):
    """A copy of the torch model whose top-level config differs (eos, prompt_attention, ...)."""
    twin = copy.deepcopy(model)
    twin.config = twin.config.with_changes(**changes)
    return twin


def manifest_variant(source: Path, target: Path, **sections: dict[str, Any]) -> Path:
    """A copy of an exported directory with some manifest fields changed, e.g.
    generation={"prompt_attention": "block_causal"}; the graphs are shared, not re-exported."""
    shutil.copytree(source, target)
    path = target / "manifest.json"
    data = json.loads(path.read_text())
    for section, changes in sections.items():
        data[section].update(changes)
    path.write_text(json.dumps(data, indent=2))
    return target


@pytest.fixture(scope="session")
def tiny_export(tiny_random_export: tuple[Path, Path]) -> SimpleNamespace:
    checkpoint, export = tiny_random_export
    model, tokenizer, spec = load_checkpoint(checkpoint)
    return SimpleNamespace(
        checkpoint=checkpoint,
        export=export,
        model=model,
        tokenizer=tokenizer,
        spec=spec,
        engine=Engine.load(export),
        preprocess_config=PreprocessConfig.from_dict(model.config.preprocess),
    )


@pytest.fixture
def tiny(tiny_export: SimpleNamespace) -> SimpleNamespace:
    def preprocessed(images: list[np.ndarray]) -> list[PreprocessedImage]:
        return [preprocess(image, tiny_export.preprocess_config) for image in images]

    def torch_tokens(images, decode: str, max_new: int = 24, model=None, **options) -> list[list[int]]:
        net = model if model is not None else tiny_export.model
        result = torch_decode(
            net, tiny_export.tokenizer, tiny_export.spec.prompt, images, decode, max_new, **options
        )
        return result.tokens

    return SimpleNamespace(
        **vars(tiny_export),
        images=random_images,
        preprocessed=preprocessed,
        torch_tokens=torch_tokens,
        torch_decode=lambda images, decode, max_new=24, **o: torch_decode(
            tiny_export.model, tiny_export.tokenizer, tiny_export.spec.prompt, images, decode, max_new, **o
        ),
        with_config=with_config,
        manifest_variant=manifest_variant,
    )
