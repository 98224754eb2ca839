"""The two onnxruntime sessions of an exported model, created once, and how to call them.

The decoder step fetches only what decoding needs (argmax ids and their probabilities at the
positions decoding reads, and the key/value tensors), never the (B, K, vocab) logits. With
IO binding (GPU providers) the logits are left on the device instead of being copied back. On the
CPU a step is a plain session.run on numpy arrays, which onnxruntime reads in place: binding the
same arrays (inputs by pointer, the present tensors into preallocated buffers) measured slower on
the bundled models (about 25 bind calls per step cost more than the copies they save).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from echo.errors import UserError
from echo.runtime.kv_cache import KVCache
from echo.runtime.manifest import (
    DECODER_HEAD_OUTPUTS,
    VISION_OUTPUTS,
    ModelManifest,
    decoder_input_names,
    decoder_output_names,
)
from echo.runtime.providers import CPU, TENSORRT
from echo.runtime.tensorrt import Profile

NUMPY_DTYPES = {"float32": np.float32, "float16": np.float16}


@dataclass(frozen=True)
class StepOutput:
    top_ids: np.ndarray  # (B, K) int64 at the asked positions: argmax, the mask token excluded
    top_probs: np.ndarray  # (B, K) float32: its softmax probability
    present: list[np.ndarray]  # key_0, value_0, key_1, ...: each (B, n_kv_heads, past + T, head_dim)


def session_options(threads: int | None) -> ort.SessionOptions:
    """One request at a time per process: parallelism inside operators, none between them."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = threads or 0  # 0: onnxruntime's default, the physical cores
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only: the node's log is not the place for optimizer notes
    return options


def provider_entries(
    providers: list[str], dtype: str, cache_dir: Path | None, profile: Profile
) -> list[str | tuple[str, dict]]:
    """Provider names with their options: TensorRT gets the graph's shape profile, builds fp16
    engines only for fp16 graphs (an fp32 export keeps fp32 numerics) and caches built engines
    when given a directory."""
    entries: list[str | tuple[str, dict]] = []
    for name in providers:
        if name == TENSORRT:
            options: dict[str, object] = {"trt_fp16_enable": dtype == "float16", **profile.provider_options()}
            if cache_dir is not None:
                cache_dir.mkdir(parents=True, exist_ok=True)
                options.update(trt_engine_cache_enable=True, trt_engine_cache_path=str(cache_dir))
            entries.append((name, options))
        else:
            entries.append(name)
    return entries


def open_session(
    path: Path,
    options: ort.SessionOptions,
    providers: list[str | tuple[str, dict]],
    inputs: list[str],
    outputs: list[str],
) -> ort.InferenceSession:
    """A session on `path` whose graph has exactly these inputs and outputs."""
    try:
        session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except Exception as error:  # onnxruntime raises its own exception types (Fail, InvalidGraph, ...)
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(f"{path}: onnxruntime cannot load this graph ({reason})") from None
    for kind, expected, found in (
        ("inputs", inputs, [i.name for i in session.get_inputs()]),
        ("outputs", outputs, [o.name for o in session.get_outputs()]),
    ):
        if found != expected:
            raise UserError(
                f"{path}: graph {kind} {found} are not the expected {expected}; re-export the model"
            )
    return session


class VisionGraph:
    def __init__(self, session: ort.InferenceSession, dtype: str) -> None:
        self.session = session
        self.dtype = NUMPY_DTYPES[dtype]

    def run(self, pixel_values: np.ndarray, index_inputs: dict[str, np.ndarray]) -> np.ndarray:
        """(N, patch_dim) patches + the grid's index inputs -> (N / merge_unit, hidden) features."""
        feeds = {"pixel_values": np.ascontiguousarray(pixel_values, dtype=self.dtype), **index_inputs}
        return self.session.run(list(VISION_OUTPUTS), feeds)[0]


class DecoderGraph:
    def __init__(self, session: ort.InferenceSession, manifest: ModelManifest, io_binding: bool) -> None:
        self.session = session
        self.num_layers = manifest.text.num_layers
        self.kv_shape = (manifest.text.num_kv_heads, manifest.text.head_dim)
        self.dtype = NUMPY_DTYPES[manifest.dtype]
        self.input_names = decoder_input_names(self.num_layers)
        self.present_names = decoder_output_names(self.num_layers)[len(DECODER_HEAD_OUTPUTS) :]
        self.wanted = ["top_ids", "top_probs", *self.present_names]
        self.io_binding = io_binding
        providers = session.get_providers()
        self.device_type = "cpu" if providers[0] == CPU else "cuda"

    def new_cache(self, batch: int, capacity: int) -> KVCache:
        """An empty cache for `batch` rows and up to `capacity` positions."""
        return KVCache(self.num_layers, batch, *self.kv_shape, capacity, self.dtype)

    def run(
        self,
        inputs_embeds: np.ndarray,
        position_ids: np.ndarray,
        attention_mask: np.ndarray,
        past: list[np.ndarray],
        logits_positions: np.ndarray,
    ) -> StepOutput:
        """inputs_embeds (B, T, H), position_ids (3, B, T), attention_mask (B, T, past + T) bool,
        past as KVCache.past; predictions at logits_positions (K,) int64 only. Arrays are passed as
        they are (onnxruntime reads contiguous numpy memory in place on the CPU)."""
        arrays = [
            np.ascontiguousarray(inputs_embeds, dtype=self.dtype),
            np.ascontiguousarray(position_ids, dtype=np.int64),
            attention_mask,
            logits_positions,
            *past,
        ]
        feeds = dict(zip(self.input_names, arrays, strict=True))
        values = self._run_bound(feeds) if self.io_binding else self.session.run(self.wanted, feeds)
        return StepOutput(values[0], values[1], values[2:])

    def _run_bound(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """IO binding: inputs copied to the device once, the outputs decoding reads bound to host
        memory, the (B, K, vocab) logits left on the device where the provider wrote them."""
        binding = self.session.io_binding()
        for name, value in feeds.items():
            binding.bind_cpu_input(name, value)
        binding.bind_output("logits", self.device_type)
        for name in self.wanted:
            binding.bind_output(name, "cpu")
        self.session.run_with_iobinding(binding)
        return [value.numpy() for value in binding.get_outputs()[1:]]  # [0] is the logits
