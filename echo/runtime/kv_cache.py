"""The decoder's past keys and values between forwards, kept without per-step allocation.

The graph takes, per layer, past key and value (B, n_kv_heads, past, head_dim) and returns them
extended by the step's T positions as present (B, n_kv_heads, past + T, head_dim). The next
forward needs a prefix of that present:

- all of it when every position of the step is kept (an AR step): the present itself becomes the
  past, nothing is copied;
- a shorter prefix when the step's last positions are dropped (a block step keeps the previous
  block, now clean, and drops its masks' keys and values): the prefix is copied into a buffer
  allocated once per decoding, sized for the longest cache and viewed at each step's exact shape
  (contiguous, as onnxruntime takes inputs). Reusing one buffer also keeps it in the CPU's caches.

`DeviceKVCache` keeps the same tensors as onnxruntime OrtValues where the decoder's provider put
them (the GPU under IO binding): presents are bound to device memory and fed back as the next
past, and a kept prefix is cut on the device by the export's `kv_prefix.onnx` (one Slice per
tensor), so a forward moves only its new positions' inputs and the predictions decoding reads.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

PREFIX_GRAPH = "kv_prefix.onnx"  # written by echo.export.kv_prefix beside decoder.onnx
PREFIX_INPUTS: tuple[str, ...] = ("end",)  # then kv_0 .. kv_{2L-1}


def prefix_names(num_layers: int) -> tuple[list[str], list[str]]:
    """kv_prefix.onnx's tensor inputs (kv_i) and outputs (prefix_i), in the decoder's KV order."""
    count = 2 * num_layers
    return [f"kv_{i}" for i in range(count)], [f"prefix_{i}" for i in range(count)]


@dataclass
class Transfers:
    """Bytes that crossed between host and device memory (instrumentation for tests and benchmarks;
    on the CPU provider they count what a GPU would move)."""

    to_device: int = 0
    to_host: int = 0


class KVCache:
    """Per layer key and value, flattened in the graph's order: key_0, value_0, key_1, ..."""

    def __init__(
        self, num_layers: int, batch: int, kv_heads: int, head_dim: int, capacity: int, dtype: type
    ) -> None:
        """capacity: the most positions the cache will hold (the context and every generated one)."""
        self.kv_heads, self.head_dim, self.capacity = kv_heads, head_dim, capacity
        self.batch = batch
        self.length = 0
        self._buffers = [
            np.empty(batch * kv_heads * capacity * head_dim, dtype) for _ in range(2 * num_layers)
        ]
        self.past: list[np.ndarray] = [
            buffer[:0].reshape(batch, kv_heads, 0, head_dim) for buffer in self._buffers
        ]

    def keep(self, present: Sequence[np.ndarray], end: int) -> None:
        """Continue from the first `end` positions of a forward's present tensors."""
        length = present[0].shape[2]
        assert self.length <= end <= length <= self.capacity, (
            f"keep {end} of {length} positions (past {self.length}, capacity {self.capacity})"
        )
        if end == self.length:  # nothing new kept (a denoising step): the past is unchanged
            return
        if end == length:
            self.past = list(present)
        else:
            shape = (self.batch, self.kv_heads, end, self.head_dim)
            size = self.batch * self.kv_heads * end * self.head_dim
            self.past = [buffer[:size].reshape(shape) for buffer in self._buffers]
            for target, source in zip(self.past, present, strict=True):
                np.copyto(target, source[:, :, :end])
        self.length = end

    def keep_rows(self, index: np.ndarray) -> None:
        """Continue with these rows only (a smaller batch fits the same buffers)."""
        self.past = [past[index] for past in self.past]
        self.batch = len(index)


class DeviceKVCache:
    """KVCache's interface over OrtValues on `device` ("cuda" or "cpu"): nothing copied to the host."""

    def __init__(
        self,
        prefix: ort.InferenceSession,
        num_layers: int,
        batch: int,
        kv_heads: int,
        head_dim: int,
        dtype: type,
        device: str,
        transfers: Transfers,
    ) -> None:
        self.prefix, self.device, self.transfers = prefix, device, transfers
        self.batch = batch
        self.length = 0
        self._inputs, self._outputs = prefix_names(num_layers)
        empty = (batch, kv_heads, 0, head_dim)
        self.past: list[ort.OrtValue] = [
            ort.OrtValue.ortvalue_from_shape_and_type(empty, dtype, device, 0) for _ in range(2 * num_layers)
        ]

    def keep(self, present: Sequence[ort.OrtValue], end: int) -> None:
        """Continue from the first `end` positions of a forward's present tensors."""
        length = present[0].shape()[2]
        assert self.length <= end <= length, f"keep {end} of {length} positions (past {self.length})"
        if end == self.length:
            return
        self.past = list(present) if end == length else self._cut(present, end)
        self.length = end

    def _cut(self, present: Sequence[ort.OrtValue], end: int) -> list[ort.OrtValue]:
        binding = self.prefix.io_binding()
        bound = np.array([end], dtype=np.int64)
        binding.bind_cpu_input(PREFIX_INPUTS[0], bound)
        self.transfers.to_device += bound.nbytes
        for name, value in zip(self._inputs, present, strict=True):
            binding.bind_ortvalue_input(name, value)
        for name in self._outputs:
            binding.bind_output(name, self.device, 0)
        self.prefix.run_with_iobinding(binding)
        return list(binding.get_outputs())

    def keep_rows(self, index: np.ndarray) -> None:
        """Continue with these rows only: through the host (once per study that finishes early)."""
        whole = [value.numpy() for value in self.past]
        rows = [np.ascontiguousarray(value[index]) for value in whole]
        self.transfers.to_host += sum(value.nbytes for value in whole)
        self.transfers.to_device += sum(row.nbytes for row in rows)
        self.past = [ort.OrtValue.ortvalue_from_numpy(row, self.device, 0) for row in rows]
        self.batch = len(index)
