"""Export a checkpoint directory (AR, RAD teacher or DCD student) to an ONNX model directory:

    vision.onnx     pixel_values + grid index tensors -> image features (any grid, any image count)
    decoder.onnx    inputs_embeds, position_ids, attention_mask, logits_positions, past KV
                    -> logits, argmax, present KV
    kv_prefix.onnx  cuts a kept prefix of the KV cache where it lies (the GPU), echo.export.kv_prefix
    embeddings.npy  the token embedding table (the engine looks tokens up in numpy)
    tokenizer.json  the checkpoint's tokenizer, byte for byte
    manifest.json   how to run it (echo.runtime.manifest), with a sha256 of every file

The directory is assembled beside the target and renamed into place, so a failed or interrupted
export never leaves a half-written model where the node would load it.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from echo.data.preprocess import PreprocessConfig
from echo.errors import UserError
from echo.export.kv_prefix import write_kv_prefix_graph
from echo.export.onnx_files import DEFAULT_OPSET, check_opset, export_graph
from echo.export.parity import (
    FLOAT16_MAX,
    TOLERANCE,
    Peak,
    activation_peak,
    graph_errors,
    reference_cases,
)
from echo.export.quantize import QUANTIZATION, quantize_decoder
from echo.export.wrappers import DecoderGraphModule, VisionGraphModule
from echo.model.checkpoint import weight_files
from echo.model.vlm import EchoVLM
from echo.runtime.kv_cache import PREFIX_GRAPH
from echo.runtime.manifest import (
    DECODER_GRAPH,
    EMBEDDINGS_FILE,
    MANIFEST_NAME,
    TOKENIZER_FILE,
    VISION_GRAPH,
    VISION_INPUTS,
    VISION_OUTPUTS,
    Generation,
    ModelManifest,
    TextGeometry,
    TokenIds,
    VisionGeometry,
    check_redecode_pair,
    content_version,
    decoder_input_names,
    decoder_output_names,
    sha256_of,
)
from echo.runtime.vision_inputs import vision_inputs
from echo.training.checkpoint import load_checkpoint

EXPORT_STEPS: tuple[str, ...] = (
    "load checkpoint",
    "vision graph",
    "decoder graph",
    "parity check",
    "embeddings",
    "manifest",
)
# Tracing shapes: every dynamic axis > 1 and distinct, so no size is specialised into the graph.
# Two images (frames > 1), one with a partial window (window length < the longest).
_TRACE_GRIDS = ((1, 8, 12), (1, 4, 6))
_TRACE_BATCH, _TRACE_LENGTH, _TRACE_PAST = 2, 5, 7
TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16}
REDECODE_DIR = "redecode"  # where --redecode-checkpoint's export goes inside OUT
REDECODE_NAME = "teacher"  # its manifest's name: the drafts it writes say "... by teacher VERSION"
EXTERNAL_DATA: tuple[str, ...] = ("auto", "always")


def export_checkpoint(
    checkpoint: Path,
    out: Path,
    *,
    fp16: bool = False,
    opset: int = DEFAULT_OPSET,
    name: str | None = None,
    force: bool = False,
    external_data: str = "auto",
    int8: bool = False,
    redecode: Path | None = None,
    on_step: Callable[[str], None] | None = None,
) -> ModelManifest:
    """Export `checkpoint` to `out`; `on_step(step)` is called as each of EXPORT_STEPS finishes.
    fp16 writes float16 graphs and embeddings (for GPUs), checked against the float32 model.
    external_data: "auto" puts a graph's weights in GRAPH.onnx.data when it exceeds protobuf's
    2 GB, "always" does so for every graph. int8 quantises the decoder's matrix products
    (echo.export.quantize), checked against the float32 model with a looser tolerance. redecode: a
    second checkpoint (the multi-step teacher) exported the same way into OUT/redecode, which the
    draft gate re-decodes failed drafts with; it must share the tokenizer and image preprocessing."""
    check_opset(opset)
    if int8 and fp16:
        raise UserError("--int8 quantises a float32 graph: leave out --fp16")
    _check_target(out, force)
    if external_data not in EXTERNAL_DATA:
        raise UserError(f"--external-data must be one of {', '.join(EXTERNAL_DATA)}, got {external_data!r}")
    done = on_step or (lambda step: None)
    dtype = "float16" if fp16 else "float32"

    model, tokenizer, spec = load_checkpoint(checkpoint)  # float32
    with activation_peak(model) as peak:
        cases = reference_cases(model)  # the float32 outputs the graphs must reproduce, taken first
    if fp16:
        check_float16_range(peak)
    model.to(TORCH_DTYPES[dtype])  # in place: one copy of the weights, never two
    config = model.config
    preprocess = _preprocess_of(config.preprocess, checkpoint)
    done(EXPORT_STEPS[0])

    work = out.parent / f".{out.name}.exporting"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        always = external_data == "always"
        export_vision(model, work / VISION_GRAPH, opset, always)
        done(EXPORT_STEPS[1])
        export_decoder(model, work / DECODER_GRAPH, opset, always)
        text = config.num_hidden_layers, config.num_key_value_heads, config.head_dim
        write_kv_prefix_graph(work / PREFIX_GRAPH, *text, dtype, opset)
        done(EXPORT_STEPS[2])
        # the float32 model still at hand (not converted to float16): the reference is taken again too
        again = (lambda: reference_cases(model)) if dtype == "float32" else (lambda: cases)
        check_graphs(cases, work, dtype, again)
        if int8:
            quantize_decoder(work / DECODER_GRAPH)
            check_graphs(cases, work, QUANTIZATION, again)
        done(EXPORT_STEPS[3])
        table = model.model.embed_tokens.weight.detach().cpu().numpy()
        np.save(work / EMBEDDINGS_FILE, np.ascontiguousarray(table))
        shutil.copyfile(checkpoint / TOKENIZER_FILE, work / TOKENIZER_FILE)
        done(EXPORT_STEPS[4])

        files = {path.name: sha256_of(path) for path in sorted(work.iterdir()) if path.is_file()}
        nested = None
        if redecode is not None:
            nested = export_checkpoint(
                redecode, work / REDECODE_DIR, fp16=fp16, opset=opset, name=REDECODE_NAME,
                external_data=external_data, int8=int8,
            )  # fmt: skip
        tokens = TokenIds(
            mask=config.mask_token_id,
            eos=config.eos_token_id,
            pad=config.pad_token_id,
            image=config.image_token_id,
            vision_start=config.vision_start_token_id,
            vision_end=config.vision_end_token_id,
        )
        generation = Generation(
            decode=spec.decode,
            prompt=spec.prompt,
            prompt_ids=tuple(tokenizer.encode(spec.prompt)),
            max_new_tokens=spec.max_new_tokens,
            threshold=spec.threshold,
            refine_threshold=spec.refine_threshold,
            block_size=config.block_size,
            prompt_attention=config.prompt_attention,
            stage=spec.stage,
        )
        vision = VisionGeometry(
            patch_size=config.vision.patch_size,
            temporal_patch_size=config.vision.temporal_patch_size,
            merge_size=config.vision.spatial_merge_size,
            window_patches=config.vision.window_size // config.vision.patch_size,
            patch_dim=config.vision.patch_dim,
        )
        text = TextGeometry(
            hidden_size=config.hidden_size,
            num_layers=config.num_hidden_layers,
            num_kv_heads=config.num_key_value_heads,
            head_dim=config.head_dim,
            vocab_size=config.vocab_size,
        )
        described: dict[str, Any] = {
            "dtype": dtype,
            "tokens": asdict(tokens),
            "generation": asdict(generation),
            "preprocess": preprocess.to_dict(),
            **({"quantization": QUANTIZATION} if int8 else {}),  # float versions read as before
            # its content version, not its manifest's bytes (which name where its checkpoint lay)
            **({"redecode": {"dir": REDECODE_DIR, "version": nested.version}} if nested else {}),
        }
        version = content_version(files, described)
        if nested is not None:  # listed, so loading checks it; its own manifest checks its files
            files[f"{REDECODE_DIR}/{MANIFEST_NAME}"] = sha256_of(work / REDECODE_DIR / MANIFEST_NAME)
        manifest = ModelManifest(
            name=name or checkpoint.resolve().name,
            version=version,
            dtype=dtype,
            opset=opset,
            tokens=tokens,
            generation=generation,
            vision=vision,
            text=text,
            preprocess=preprocess.to_dict(),
            files=files,
            source=_source(checkpoint),
            quantization=QUANTIZATION if int8 else None,
            redecode=REDECODE_DIR if redecode is not None else None,
        )
        manifest.check(str(work / MANIFEST_NAME))
        if nested is not None:
            check_redecode_pair(manifest, nested, f"--redecode-checkpoint {redecode}")
        (work / MANIFEST_NAME).write_text(manifest.to_json(), encoding="utf-8")
        _move_into_place(work, out)
        done(EXPORT_STEPS[5])
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return manifest


def check_float16_range(peak: Peak) -> None:
    """Refuse a float16 export whose float32 activations on the parity inputs exceed float16."""
    if peak.value > FLOAT16_MAX:
        raise UserError(
            f"float16 cannot hold this model's activations: {peak.where} reaches {peak.value:.3g} on the "
            f"parity inputs, beyond float16's {FLOAT16_MAX:.0f} (common in bf16-trained Qwen2 models); "
            "export float32 instead (without --fp16)"
        )


def check_graphs(cases: dict, work: Path, dtype: str, again: Callable[[], dict]) -> None:
    """check_parity on the graphs in `work`; a disagreement is measured once more, against
    `again()`'s reference cases, before it fails the export. A mistranslated operator disagrees
    every time; a one-off glitch of a multi-threaded CPU run does not (seen once under load: a
    vision error of 1.6e-3 on a graph that measures 3e-6 on every other run)."""
    try:
        check_parity(graph_errors(cases, work), dtype)
    except UserError:
        check_parity(graph_errors(again(), work), dtype)


def check_parity(errors: dict[str, float], dtype: str) -> None:
    """Refuse graphs whose outputs on the parity cases are not finite or not close to float32's."""
    worst = max(errors, key=lambda key: errors[key])
    error, tolerance = errors[worst], TOLERANCE[dtype]
    if error <= tolerance:
        return
    found = "inf or nan" if error == float("inf") else f"relative error {error:.2e} > {tolerance:.0e}"
    if dtype == QUANTIZATION:
        raise UserError(
            f"the int8 {worst} graph strays too far from the float32 model on the parity inputs ({found}); "
            "export float32 (without --int8)"
        )
    if dtype == "float16":
        raise UserError(
            f"the float16 {worst} graph overflows or loses precision on the parity inputs ({found}): "
            "this model's activations exceed float16's range (common in bf16-trained Qwen2 models); "
            "export float32 instead (without --fp16)"
        )
    raise UserError(
        f"the exported {worst} graph disagrees with the checkpoint ({found}); "
        "the model uses an operator the exporter mistranslates"
    )


def export_vision(model: EchoVLM, path: Path, opset: int, external_data: bool = False) -> None:
    geometry = model.config.vision
    grids = list(_TRACE_GRIDS)
    index = vision_inputs(grids, geometry.spatial_merge_size, geometry.window_size // geometry.patch_size)
    n = sum(int(np.prod(grid)) for grid in grids)
    pixels = torch.randn(n, geometry.patch_dim, dtype=model.dtype)
    feeds = index.feeds(VISION_INPUTS[1:])
    args = (pixels, *(torch.from_numpy(feeds[name]) for name in VISION_INPUTS[1:]))
    dynamic = torch.export.Dim.DYNAMIC
    axes = {
        "pixel_values": {0: "patches"},
        "patch_positions": {0: "patches"},
        "window_index": {0: "image_tokens"},
        "restore_index": {0: "image_tokens"},
        "window_slots": {0: "windows", 1: "window_length"},
        "window_places": {0: "patches"},
        "frame_slots": {0: "frames", 1: "frame_length"},
        "frame_places": {0: "patches"},
    }
    shapes = tuple({axis: dynamic for axis in axes[name]} for name in VISION_INPUTS)
    export_graph(
        VisionGraphModule(model.visual).eval(),
        args,
        shapes,
        VISION_INPUTS,
        VISION_OUTPUTS,
        axes,
        path,
        opset,
        external_data,
    )


def export_decoder(model: EchoVLM, path: Path, opset: int, external_data: bool = False) -> None:
    config = model.config
    layers = config.num_hidden_layers
    b, t, p = _TRACE_BATCH, _TRACE_LENGTH, _TRACE_PAST
    kv_shape = (b, config.num_key_value_heads, p, config.head_dim)
    past = tuple(torch.randn(kv_shape, dtype=model.dtype) for _ in range(2 * layers))
    args = (
        torch.randn(b, t, config.hidden_size, dtype=model.dtype),
        (torch.arange(t) + p).expand(3, b, t).contiguous(),
        torch.ones(b, t, p + t, dtype=torch.bool),
        torch.tensor([1, 2, 4]),  # K = 3: distinct from the other traced sizes
        *past,
    )
    dynamic = torch.export.Dim.DYNAMIC
    shapes = (
        {0: dynamic, 1: dynamic},
        {1: dynamic, 2: dynamic},
        {0: dynamic, 1: dynamic, 2: dynamic},
        {0: dynamic},
        tuple({0: dynamic, 2: dynamic} for _ in range(2 * layers)),
    )
    axes: dict[str, dict[int, str]] = {
        "inputs_embeds": {0: "batch", 1: "sequence"},
        "position_ids": {1: "batch", 2: "sequence"},
        "attention_mask": {0: "batch", 1: "sequence", 2: "total_sequence"},
        "logits_positions": {0: "logits_sequence"},
    }
    for name in decoder_input_names(layers)[4:]:
        axes[name] = {0: "batch", 2: "past_sequence"}
    export_graph(
        DecoderGraphModule(model).eval(),
        args,
        shapes,
        decoder_input_names(layers),
        decoder_output_names(layers),
        axes,
        path,
        opset,
        external_data,
    )


def _check_target(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise UserError(f"--out {out} is not empty; pass --force to replace it")


def _preprocess_of(raw: dict[str, Any], checkpoint: Path) -> PreprocessConfig:
    if not raw:
        raise UserError(f"{checkpoint}/config.json has no 'preprocess' section (min_pixels, max_pixels, ...)")
    return PreprocessConfig.from_dict(raw)


def _source(checkpoint: Path) -> dict[str, Any]:
    return {
        "checkpoint": str(checkpoint.resolve()),
        "weights_sha256": {path.name: sha256_of(path) for path in weight_files(checkpoint)},
        "config_sha256": sha256_of(checkpoint / "config.json"),
        "exporter": f"torch {torch.__version__.split('+')[0]} (dynamo), onnx {onnx.__version__}",
    }


def _move_into_place(work: Path, out: Path) -> None:
    """Replace `out` by `work` with renames only (the old model stays until the new one is whole)."""
    old = out.parent / f".{out.name}.replaced"
    shutil.rmtree(old, ignore_errors=True)
    if out.exists():
        out.rename(old)
    work.rename(out)
    shutil.rmtree(old, ignore_errors=True)
