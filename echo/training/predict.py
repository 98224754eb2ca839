"""Generate reports for a manifest with a torch checkpoint: one JSON line per study.

Rows: ``{"id", "report", "tokens", "forwards", "seconds"}`` — the format `echo-train evaluate` reads.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from rich.progress import Progress

from echo.data.preprocess import preprocess
from echo.decodings import DECODES
from echo.errors import UserError
from echo.training.checkpoint import preprocess_config_of
from echo.training.examples import ExampleSet, shape_groups


@dataclass(frozen=True)
class DecodeOptions:
    decode: str = "onestep"
    steps: int | None = None  # multistep budget per block; None = block size
    threshold: float = 0.85  # multistep: low_confidence_dynamic tau; refine: its confidence threshold
    remasking: str = "low_confidence_dynamic"
    max_new_tokens: int = 192
    block_size: int | None = None  # None: the model config's

    def __post_init__(self) -> None:
        if self.decode not in DECODES:
            raise UserError(f"--decode must be one of {', '.join(DECODES)}, not {self.decode!r}")


def make_context(model, tokenizer, prompt: str, images: list[np.ndarray]):
    """A decoding Context for a stack of uint8 images at the model's input size."""
    from echo.decoding import Context, build_context_ids

    config = preprocess_config_of(model)
    processed = [preprocess(image.astype(np.float32) / 255.0, config) for image in images]
    t, h, w = processed[0].grid_thw
    ids = build_context_ids(
        t * h * w // config.merge_size**2,
        tokenizer.encode(prompt),
        vision_start_id=tokenizer.vision_start_id,
        image_pad_id=tokenizer.image_pad_id,
        vision_end_id=tokenizer.vision_end_id,
    )
    return Context(
        input_ids=torch.tensor([ids] * len(images), dtype=torch.long),
        pixel_values=torch.from_numpy(np.concatenate([p.pixel_values for p in processed])).float(),
        image_grid_thw=torch.tensor([p.grid_thw for p in processed], dtype=torch.long),
    )


def decode_batch(model, context, options: DecodeOptions):
    from echo.decoding import decode_ar, decode_block_diffusion, decode_onestep, decode_refine

    block = options.block_size or int(model.config.block_size)
    if options.decode == "ar":
        return decode_ar(model, context, max_new_tokens=options.max_new_tokens)
    if options.decode == "onestep":
        return decode_onestep(model, context, block_size=block, max_new_tokens=options.max_new_tokens)
    if options.decode == "refine":
        return decode_refine(
            model, context, block, max_new_tokens=options.max_new_tokens, threshold=options.threshold
        )
    return decode_block_diffusion(
        model,
        context,
        block_size=block,
        max_new_tokens=options.max_new_tokens,
        remasking=options.remasking,
        steps_per_block=options.steps or block,
        threshold=options.threshold,
    )


def predict_rows(
    model, tokenizer, prompt: str, examples: ExampleSet, options: DecodeOptions, batch_size: int = 1
) -> Iterator[dict]:
    model.eval()
    with torch.inference_mode(), Progress(transient=True) as progress:
        task = progress.add_task(f"predict ({options.decode})", total=len(examples))
        chunks = [
            group[start : start + batch_size]
            for group in shape_groups(examples.images, range(len(examples)))
            for start in range(0, len(group), batch_size)
        ]
        for chunk in chunks:
            context = make_context(model, tokenizer, prompt, [examples.images[i] for i in chunk])
            began = time.perf_counter()
            result = decode_batch(model, context, options)
            seconds = (time.perf_counter() - began) / len(chunk)
            for row, tokens in enumerate(result.tokens):
                confidences = result.confidences[row] if result.confidences else []
                yield {
                    "id": examples.ids[chunk[row]],
                    "report": tokenizer.decode(tokens),
                    "tokens": len(tokens),
                    "forwards": result.forwards,
                    "seconds": seconds,
                    "confidence": sum(confidences) / len(confidences) if confidences else None,
                }
            progress.advance(task, len(chunk))


def write_jsonl(rows, path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with path.open("w") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")
            count += 1
    return count
