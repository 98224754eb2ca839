"""The prompt layout every stage shares, so training rows and decoding contexts are identical:

    [text before the image][<|vision_start|>, <|image_pad|> x n_image_tokens, <|vision_end|>][text after]

and the response follows, ending with eos. The text around the image is the generation spec's
prompt: a chat-templated prompt holds one image placeholder where the image goes; a plain one (the
demo models') has none, and the image comes first. `build_context_ids` is `echo.chat.context_row`,
which the onnxruntime engine calls too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from echo.chat import context_row
from echo.model.config import EchoVLConfig
from echo.model.vlm import EchoVLM


@dataclass
class Context:
    """One decoding call's input: B rows of equal length C (one image per row)."""

    input_ids: torch.Tensor  # (B, C) long
    pixel_values: torch.Tensor | None  # (N_patches, C*T*P*P) of all rows' images, row by row
    image_grid_thw: torch.Tensor | None  # (n_images, 3) long

    def __post_init__(self) -> None:
        if self.input_ids.dim() != 2 or self.input_ids.shape[1] == 0:
            raise ValueError(
                f"Context.input_ids must be (B, C) with C >= 1, got {tuple(self.input_ids.shape)}"
            )
        if (self.pixel_values is None) != (self.image_grid_thw is None):
            raise ValueError("Context needs pixel_values and image_grid_thw together (or neither)")

    @property
    def batch_size(self) -> int:
        return self.input_ids.shape[0]

    @property
    def length(self) -> int:
        return self.input_ids.shape[1]


def image_token_count(image_grid_thw: Sequence[int], merge_size: int) -> int:
    """LLM tokens one image becomes: its t*h*w patches merged merge_size x merge_size."""
    t, h, w = (int(x) for x in image_grid_thw)
    if h % merge_size or w % merge_size:
        raise ValueError(f"image grid {[t, h, w]} is not a multiple of the merge size {merge_size}")
    return t * h * w // merge_size**2


build_context_ids = context_row  # [before][vision_start, image_pad x n, vision_end][after]


def context_ids_for(config: EchoVLConfig, n_image_tokens: int, prompt_ids: Sequence[int]) -> list[int]:
    """build_context_ids with the special ids of a model config."""
    return build_context_ids(
        n_image_tokens,
        prompt_ids,
        vision_start_id=config.vision_start_token_id,
        image_pad_id=config.image_token_id,
        vision_end_id=config.vision_end_token_id,
    )


def prepare_context(
    model_or_config: EchoVLM | EchoVLConfig,
    pixel_values: torch.Tensor,
    image_grid_thw: torch.Tensor,
    prompt_ids: Sequence[int] | Sequence[Sequence[int]],
) -> Context:
    """One row per image. `prompt_ids` is one prompt for every row, or one per row (equal lengths,
    since a batch shares one context length). The special ids come from the model's config."""
    config = model_or_config.config if isinstance(model_or_config, EchoVLM) else model_or_config
    grid = torch.as_tensor(image_grid_thw, dtype=torch.long)
    if grid.dim() != 2 or grid.shape[1] != 3:
        raise ValueError(f"image_grid_thw must be (n_images, 3), got {tuple(grid.shape)}")
    n_rows = grid.shape[0]
    prompts = _per_row(prompt_ids, n_rows)
    n_patches = int(grid.prod(-1).sum())
    if pixel_values.dim() != 2 or pixel_values.shape[0] != n_patches:
        raise ValueError(
            f"pixel_values must have {n_patches} rows for grids {grid.tolist()}, got {tuple(pixel_values.shape)}"
        )
    merge = config.vision.spatial_merge_size
    rows = [
        context_ids_for(config, image_token_count(g, merge), p)
        for g, p in zip(grid.tolist(), prompts, strict=True)
    ]
    if len({len(row) for row in rows}) != 1:
        raise ValueError(f"contexts in a batch must have one length, got {sorted({len(r) for r in rows})}")
    too_big = sorted({t for row in rows for t in row if not 0 <= t < config.vocab_size})
    if too_big:
        raise ValueError(f"token ids outside the vocabulary (size {config.vocab_size}): {too_big[:5]}")
    return Context(torch.tensor(rows, dtype=torch.long), pixel_values, grid)


def _per_row(prompt_ids: Sequence[int] | Sequence[Sequence[int]], n_rows: int) -> list[list[int]]:
    if len(prompt_ids) and not isinstance(prompt_ids[0], int):
        prompts = [list(p) for p in prompt_ids]  # type: ignore[arg-type]
        if len(prompts) != n_rows:
            raise ValueError(f"{len(prompts)} prompts for {n_rows} images")
        return prompts
    return [list(prompt_ids)] * n_rows  # type: ignore[arg-type]
