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
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


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
