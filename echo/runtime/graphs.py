"""The two onnxruntime sessions of an exported model, created once, and how to call them.

The decoder step fetches only what decoding needs (argmax ids and their probabilities at the
positions decoding reads, and the key/value tensors), never the (B, K, vocab) logits. With
IO binding (GPU providers) the logits are left on the device instead of being copied back, and so
is the KV cache (echo.runtime.kv_cache.DeviceKVCache, for exports with kv_prefix.onnx): a forward
sends its new positions' inputs and reads back top_ids and top_probs, nothing that grows with the
cache. On the CPU a step is a plain session.run on numpy arrays, which onnxruntime reads in place:
binding the same arrays (inputs by pointer, the present tensors into preallocated buffers) measured
slower on the bundled models (about 25 bind calls per step cost more than the copies they save).
`Engine.load(io_binding=True)` runs the device path on the CPU provider (OrtValues on "cpu").
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from echo.errors import UserError
from echo.runtime.kv_cache import PREFIX_GRAPH, PREFIX_INPUTS, DeviceKVCache, KVCache, Transfers, prefix_names
from echo.runtime.manifest import (
    DECODER_HEAD_OUTPUTS,
    VISION_OUTPUTS,
    ModelManifest,
    decoder_input_names,
    decoder_output_names,
)
from echo.runtime.providers import CPU, TENSORRT
from echo.runtime.tensorrt import Profile
from echo.runtime.vision_inputs import VisionInputs

NUMPY_DTYPES = {"float32": np.float32, "float16": np.float16}


@dataclass(frozen=True)
class StepOutput:
    top_ids: np.ndarray  # (B, K) int64 at the asked positions: argmax, the mask token excluded
    top_probs: np.ndarray  # (B, K) float32: its softmax probability
    # key_0, value_0, key_1, ...: each (B, n_kv_heads, past + T, head_dim); OrtValues on the
    # session's device when the cache stays there (DeviceKVCache), numpy arrays otherwise
    present: list[np.ndarray] | list[ort.OrtValue]


def session_options(threads: int | None) -> ort.SessionOptions:
    """One request at a time per process: parallelism inside operators, none between them."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = threads or 0  # 0: onnxruntime's default, the physical cores
    options.inter_op_num_threads = 1
    # No CPU memory arena: its chunks, sized for the largest shapes seen, stayed held for the life of
    # the worker (~12 MB of the bundled student's process after 20 reports); speed within 3%.
    options.enable_cpu_mem_arena = False
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
    inputs: list[str] | tuple[tuple[str, ...], ...],
    outputs: list[str],
) -> ort.InferenceSession:
    """A session on `path` whose graph has exactly these inputs (or one of these input lists: a
    graph interface with older exports still served) and outputs."""
    accepted = [list(names) for names in inputs] if isinstance(inputs, tuple) else [inputs]
    try:
        session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except Exception as error:  # onnxruntime raises its own exception types (Fail, InvalidGraph, ...)
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(f"{path}: onnxruntime cannot load this graph ({reason})") from None
    for kind, expected, found in (
        ("inputs", accepted, [i.name for i in session.get_inputs()]),
        ("outputs", [outputs], [o.name for o in session.get_outputs()]),
    ):
        if found not in expected:
            raise UserError(
                f"{path}: graph {kind} {found} are not the expected {expected[0]}; re-export the model"
            )
    return session


class VisionGraph:
    def __init__(self, session: ort.InferenceSession, dtype: str) -> None:
        self.session = session
        self.dtype = NUMPY_DTYPES[dtype]
        self.index_names = [value.name for value in session.get_inputs()][1:]  # after pixel_values

    def run(self, pixel_values: np.ndarray, index_inputs: VisionInputs) -> np.ndarray:
        """(N, patch_dim) patches + the grid's index inputs -> (N / merge_unit, hidden) features."""
        feeds = {
            "pixel_values": np.ascontiguousarray(pixel_values, dtype=self.dtype),
            **index_inputs.feeds(self.index_names),
        }
        return self.session.run(list(VISION_OUTPUTS), feeds)[0]


class DecoderGraph:
    def __init__(
        self,
        session: ort.InferenceSession,
        manifest: ModelManifest,
        io_binding: bool,
        prefix: ort.InferenceSession | None = None,
    ) -> None:
        """prefix: the export's kv_prefix.onnx session; with IO binding it keeps the KV cache on
        the device (DeviceKVCache). Without it (an older export) the cache lives in host memory."""
        self.session = session
        self.num_layers = manifest.text.num_layers
        self.kv_shape = (manifest.text.num_kv_heads, manifest.text.head_dim)
        self.dtype = NUMPY_DTYPES[manifest.dtype]
        self.input_names = decoder_input_names(self.num_layers)
        self.present_names = decoder_output_names(self.num_layers)[len(DECODER_HEAD_OUTPUTS) :]
        self.wanted = ["top_ids", "top_probs", *self.present_names]
        self.io_binding = io_binding
        self.prefix = prefix if io_binding else None
        self.transfers = Transfers()
        providers = session.get_providers()
        self.device_type = "cpu" if providers[0] == CPU else "cuda"

    def new_cache(self, batch: int, capacity: int) -> KVCache | DeviceKVCache:
        """An empty cache for `batch` rows and up to `capacity` positions."""
        if self.prefix is not None:
            layers, device = self.num_layers, self.device_type
            return DeviceKVCache(
                self.prefix, layers, batch, *self.kv_shape, self.dtype, device, self.transfers
            )
        return KVCache(self.num_layers, batch, *self.kv_shape, capacity, self.dtype)

    def run(
        self,
        inputs_embeds: np.ndarray,
        position_ids: np.ndarray,
        attention_mask: np.ndarray,
        past: list[np.ndarray] | list[ort.OrtValue],
        logits_positions: np.ndarray,
    ) -> StepOutput:
        """inputs_embeds (B, T, H), position_ids (3, B, T), attention_mask (B, T, past + T) bool,
        past as the cache's `past`; predictions at logits_positions (K,) int64 only. Arrays are
        passed as they are (onnxruntime reads contiguous numpy memory in place on the CPU)."""
        arrays = [
            np.ascontiguousarray(inputs_embeds, dtype=self.dtype),
            np.ascontiguousarray(position_ids, dtype=np.int64),
            attention_mask,
            logits_positions,
        ]
        if self.prefix is not None:
            values = self._run_on_device(dict(zip(self.input_names, arrays, strict=False)), past)
        else:
            feeds = dict(zip(self.input_names, [*arrays, *past], strict=True))
            values = self._run_bound(feeds) if self.io_binding else self.session.run(self.wanted, feeds)
        return StepOutput(values[0], values[1], values[2:])

    def _run_bound(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """IO binding over a host cache (exports without kv_prefix.onnx): inputs copied to the
        device, the outputs decoding reads bound to host memory, the (B, K, vocab) logits left on
        the device where the provider wrote them."""
        binding = self.session.io_binding()
        for name, value in feeds.items():
            binding.bind_cpu_input(name, value)
            self.transfers.to_device += value.nbytes
        binding.bind_output("logits", self.device_type)
        for name in self.wanted:
            binding.bind_output(name, "cpu")
        self.session.run_with_iobinding(binding)
        values = [value.numpy() for value in binding.get_outputs()[1:]]  # [0] is the logits
        self.transfers.to_host += sum(value.nbytes for value in values)
        return values

    def _run_on_device(self, feeds: dict[str, np.ndarray], past: list[ort.OrtValue]) -> list:
        """The new positions' inputs copied in, the past bound where it lies, the presents and
        logits left on the device; only top_ids and top_probs come back to the host."""
        binding = self.session.io_binding()
        for name, value in feeds.items():
            binding.bind_cpu_input(name, value)
            self.transfers.to_device += value.nbytes
        for name, value in zip(self.input_names[len(feeds) :], past, strict=True):
            binding.bind_ortvalue_input(name, value)
        binding.bind_output("logits", self.device_type, 0)
        binding.bind_output("top_ids", "cpu")
        binding.bind_output("top_probs", "cpu")
        for name in self.present_names:
            binding.bind_output(name, self.device_type, 0)
        self.session.run_with_iobinding(binding)
        outputs = binding.get_outputs()
        top_ids, top_probs = outputs[1].numpy(), outputs[2].numpy()
        self.transfers.to_host += top_ids.nbytes + top_probs.nbytes
        return [top_ids, top_probs, *outputs[3:]]


def open_prefix_session(
    directory: Path, manifest: ModelManifest, options: ort.SessionOptions, providers: list[str]
) -> ort.InferenceSession | None:
    """The export's kv_prefix.onnx on the decoder's device (None for exports made before it).
    A Slice per tensor needs no TensorRT engine: CUDA (or the CPU) runs it."""
    if PREFIX_GRAPH not in manifest.files:
        return None
    inputs, outputs = prefix_names(manifest.text.num_layers)
    chosen = [name for name in providers if name != TENSORRT] or [CPU]
    return open_session(directory / PREFIX_GRAPH, options, chosen, [*PREFIX_INPUTS, *inputs], outputs)
