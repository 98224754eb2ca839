"""ONNX graphs against the torch model on random inputs: the relative error of every output.

Used twice: by the exporter, which refuses to write a model directory whose graphs disagree with
the checkpoint, and by the tests, on fresh inputs. Relative error = max |onnx - torch| / max |torch|
over an output, the largest over the outputs of a case.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from echo.errors import UserError
from echo.model.vlm import EchoVLM
from echo.runtime.manifest import DECODER_GRAPH, VISION_GRAPH, decoder_input_names, decoder_output_names
from echo.runtime.masks import block_causal_mask
from echo.runtime.vision_inputs import Grid, vision_inputs

TOLERANCE = {"float32": 1e-4, "float16": 2e-2}  # fp16 graphs are compared with the fp32 model


@dataclass(frozen=True)
class DecoderCase:
    batch: int
    length: int  # T: new positions
    past: int  # P: cached positions (0 = the prefill)


def relative_error(got: np.ndarray, want: np.ndarray) -> float:
    want64 = np.asarray(want, dtype=np.float64)
    scale = float(np.abs(want64).max()) or 1.0
    return float(np.abs(np.asarray(got, dtype=np.float64) - want64).max() / scale)


def cpu_session(path: Path) -> ort.InferenceSession:
    try:
        return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime's own exception types
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(f"{path.name}: onnxruntime cannot run this graph ({reason})") from None


def vision_error(model: EchoVLM, session: ort.InferenceSession, grids: list[Grid], seed: int) -> float:
    """Image features of random patches for these grids (several images allowed)."""
    cfg = model.config.vision
    rng = np.random.default_rng(seed)
    n = sum(t * h * w for t, h, w in grids)
    pixels = rng.standard_normal((n, cfg.patch_dim)).astype(np.float32)
    index = vision_inputs(grids, cfg.spatial_merge_size, cfg.window_size // cfg.patch_size)
    dtype = session.get_inputs()[0].type
    feeds = {"pixel_values": pixels.astype(np.float16 if "float16" in dtype else np.float32), **index.feeds()}
    got = session.run(None, feeds)[0]
    with torch.no_grad():
        want = model.encode_images(torch.from_numpy(pixels), torch.tensor(grids)).float().numpy()
    return relative_error(got, want)


def decoder_error(model: EchoVLM, session: ort.InferenceSession, case: DecoderCase, seed: int) -> float:
    """Logits and present KV for random embeddings, positions, a block-causal mask and a random past."""
    config = model.config
    rng = np.random.default_rng(seed)
    b, t, p = case.batch, case.length, case.past
    layers = config.num_hidden_layers
    embeds = (rng.standard_normal((b, t, config.hidden_size)) * config.initializer_range * 10).astype(
        np.float32
    )
    start = rng.integers(0, 50, size=(1, b, 1))
    positions = np.broadcast_to(start + p + np.arange(t), (3, b, t)).astype(np.int64)
    mask = np.broadcast_to(block_causal_mask(t, 4, p, offset=p), (b, t, p + t)).copy()
    past = [
        rng.standard_normal((b, config.num_key_value_heads, p, config.head_dim)).astype(np.float32)
        for _ in range(2 * layers)
    ]
    dtype = np.float16 if "float16" in session.get_inputs()[0].type else np.float32
    feeds = dict(
        zip(
            decoder_input_names(layers),
            [embeds.astype(dtype), positions, mask, np.arange(t), *(kv.astype(dtype) for kv in past)],
            strict=True,
        )
    )
    names = decoder_output_names(layers)
    got = dict(zip(names, session.run(names, feeds), strict=True))
    cache = [(torch.from_numpy(past[2 * i]), torch.from_numpy(past[2 * i + 1])) for i in range(layers)]
    with torch.no_grad():
        logits, present = model(
            torch.from_numpy(embeds), torch.from_numpy(positions), torch.from_numpy(mask), cache
        )
    errors = [relative_error(got["logits"], logits.numpy())]
    for i, (k, v) in enumerate(present):
        errors += [
            relative_error(got[f"present_key_{i}"], k.numpy()),
            relative_error(got[f"present_value_{i}"], v.numpy()),
        ]
    return max(errors)


def graph_parity(model: EchoVLM, model_dir: Path, seed: int = 0) -> dict[str, float]:
    """Relative errors of the directory's graphs against `model` (float32): vision on two images
    of different grids, the prefill (no past) and a decoding step over a past."""
    assert model.dtype == torch.float32, "parity is measured against the float32 model"
    vision = cpu_session(model_dir / VISION_GRAPH)
    decoder = cpu_session(model_dir / DECODER_GRAPH)
    return {
        "vision": vision_error(model, vision, [(1, 6, 8), (1, 4, 10)], seed),
        "prefill": decoder_error(model, decoder, DecoderCase(batch=2, length=19, past=0), seed + 1),
        "step": decoder_error(model, decoder, DecoderCase(batch=3, length=16, past=23), seed + 2),
    }
