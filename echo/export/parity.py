"""ONNX graphs against the torch model on random inputs: the relative error of every output.

Used twice: by the exporter, which refuses to write a model directory whose graphs disagree with
the checkpoint, and by the tests, on fresh inputs. Relative error = max |onnx - torch| / max |torch|
over an output, the largest over the outputs of a case; infinite where the graph's output holds
inf or nan (a float16 overflow).

A case is its feeds and the torch model's outputs, computed apart from the graph run: the exporter
takes the float32 references first and then converts the same model to float16 in place, so it
never holds a second copy of the weights.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
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

# fp16 and int8 graphs are compared with the fp32 model; int8 ("int8-dynamic") logits stray ~8% on
# the random parity inputs (the bundled student), so its bound catches a broken graph, not noise
TOLERANCE = {"float32": 1e-4, "float16": 2e-2, "int8-dynamic": 0.25}
FLOAT16_MAX = 65504.0


@dataclass(frozen=True)
class Case:
    """Graph feeds (float inputs in float32: cast to the graph's dtype when run) and the torch
    model's float32 outputs by graph output name."""

    feeds: dict[str, np.ndarray]
    want: dict[str, np.ndarray]


@dataclass(frozen=True)
class DecoderCase:
    batch: int
    length: int  # T: new positions
    past: int  # P: cached positions (0 = the prefill)
    logits_from: int = 0  # logits at positions logits_from..T-1 (decoding asks for the block's only)


def relative_error(got: np.ndarray, want: np.ndarray) -> float:
    got64 = np.asarray(got, dtype=np.float64)
    if not np.isfinite(got64).all():
        return float("inf")
    want64 = np.asarray(want, dtype=np.float64)
    scale = float(np.abs(want64).max()) or 1.0
    return float(np.abs(got64 - want64).max() / scale)


def cpu_session(path: Path) -> ort.InferenceSession:
    try:
        return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime's own exception types
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(f"{path.name}: onnxruntime cannot run this graph ({reason})") from None


def case_error(session: ort.InferenceSession, case: Case) -> float:
    """The largest relative error of the session's outputs against the case's torch outputs."""
    float16 = "float16" in session.get_inputs()[0].type
    names = [value.name for value in session.get_inputs()]
    feeds = {
        name: value.astype(np.float16) if float16 and value.dtype == np.float32 else value
        for name, value in case.feeds.items()
        if name in names
    }
    wanted = list(case.want)
    got = session.run(wanted, feeds)
    return max(relative_error(value, case.want[name]) for name, value in zip(wanted, got, strict=True))


def vision_case(model: EchoVLM, grids: list[Grid], seed: int) -> Case:
    """Image features of random patches for these grids (several images allowed)."""
    cfg = model.config.vision
    rng = np.random.default_rng(seed)
    n = sum(t * h * w for t, h, w in grids)
    pixels = rng.standard_normal((n, cfg.patch_dim)).astype(np.float32)
    index = vision_inputs(grids, cfg.spatial_merge_size, cfg.window_size // cfg.patch_size)
    with torch.no_grad():
        want = model.encode_images(torch.from_numpy(pixels), torch.tensor(grids)).float().numpy()
    return Case({"pixel_values": pixels, **index.feeds()}, {"image_features": want})


def decoder_case(model: EchoVLM, case: DecoderCase, seed: int) -> Case:
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
    feeds = dict(
        zip(
            decoder_input_names(layers),
            [embeds, positions, mask, np.arange(case.logits_from, t), *past],
            strict=True,
        )
    )
    cache = [(torch.from_numpy(past[2 * i]), torch.from_numpy(past[2 * i + 1])) for i in range(layers)]
    with torch.no_grad():
        logits, present = model(
            torch.from_numpy(embeds), torch.from_numpy(positions), torch.from_numpy(mask), cache
        )
    flat = [tensor.float().numpy() for kv in present for tensor in kv]
    names = decoder_output_names(layers)
    wanted = logits[:, case.logits_from :].float().numpy()
    return Case(feeds, {"logits": wanted, **dict(zip(names[3:], flat, strict=True))})


def vision_error(model: EchoVLM, session: ort.InferenceSession, grids: list[Grid], seed: int) -> float:
    return case_error(session, vision_case(model, grids, seed))


def decoder_error(model: EchoVLM, session: ort.InferenceSession, case: DecoderCase, seed: int) -> float:
    return case_error(session, decoder_case(model, case, seed))


def reference_cases(model: EchoVLM, seed: int = 0) -> dict[str, Case]:
    """The parity cases with the float32 model's outputs: vision on two images of different
    grids, the prefill (no past) and a decoding step over a past."""
    assert model.dtype == torch.float32, "parity is measured against the float32 model"
    return {
        "vision": vision_case(model, [(1, 6, 8), (1, 4, 10)], seed),
        "prefill": decoder_case(model, DecoderCase(batch=2, length=19, past=0), seed + 1),
        "step": decoder_case(model, DecoderCase(batch=3, length=16, past=23), seed + 2),
    }


def graph_errors(cases: dict[str, Case], model_dir: Path) -> dict[str, float]:
    """Relative errors of the directory's graphs on reference cases (inf: inf or nan came out)."""
    sessions = {
        "vision": cpu_session(model_dir / VISION_GRAPH),
        "decoder": cpu_session(model_dir / DECODER_GRAPH),
    }
    return {
        name: case_error(sessions["vision" if name == "vision" else "decoder"], case)
        for name, case in cases.items()
    }


def graph_parity(model: EchoVLM, model_dir: Path, seed: int = 0) -> dict[str, float]:
    """Relative errors of the directory's graphs against `model` (float32) on reference_cases."""
    return graph_errors(reference_cases(model, seed), model_dir)


@dataclass
class Peak:
    """The largest magnitude among the inputs and outputs of a model's modules, and where."""

    value: float = 0.0
    where: str = ""


@contextmanager
def activation_peak(model: torch.nn.Module) -> Iterator[Peak]:
    """Track the largest |activation| entering or leaving any submodule while the block runs.

    A float16 graph turns any value past 65504 into inf; onnxruntime's CPU provider computes
    many float16 operators in float32, so a CPU parity run cannot show an overflow a GPU would
    hit. The float32 reference run can: its activations are what float16 would have to hold."""
    peak = Peak()

    def hook(name: str, module: torch.nn.Module, inputs: tuple, output: object) -> None:
        values = [*inputs, *(output if isinstance(output, tuple) else (output,))]
        for value in values:
            if isinstance(value, torch.Tensor) and value.is_floating_point() and value.numel():
                largest = float(value.detach().abs().max())
                if largest > peak.value:
                    peak.value, peak.where = largest, name

    handles = [
        module.register_forward_hook(lambda m, i, o, name=name: hook(name, m, i, o))
        for name, module in model.named_modules()
        if name
    ]
    try:
        yield peak
    finally:
        for handle in handles:
            handle.remove()
