"""The state one decoding call threads through its forwards (a numpy port of
echo.decoding.session): context embedded once, positions computed once, a KV cache that always
ends where the next forward's input starts, and rows that leave the batch when they finish."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from echo.runtime.graphs import DecoderGraph, KVCache, StepOutput
from echo.runtime.positions import continue_positions

# (query length, past length) -> (query length, past length + query length) bool mask
MaskBuilder = Callable[[int, int], np.ndarray]


@dataclass
class PreparedContext:
    """B rows of one context length: ids, their embeddings (image features placed) and positions."""

    ids: np.ndarray  # (B, C) int64
    embeds: np.ndarray  # (B, C, H)
    positions: np.ndarray  # (3, B, C) int64

    @property
    def batch_size(self) -> int:
        return self.ids.shape[0]

    @property
    def length(self) -> int:
        return self.ids.shape[1]


class DecodeSession:
    def __init__(
        self,
        decoder: DecoderGraph,
        embeddings: np.ndarray,
        context: PreparedContext,
        n_new_positions: int,
        attention: MaskBuilder,
    ) -> None:
        self.decoder = decoder
        self.embeddings = embeddings  # (V, H) token embedding table
        self.started = time.perf_counter()
        self.prefill_seconds = 0.0
        self.forwards = 0
        self._attention = attention
        self.context_ids = context.ids
        self.context_embeds = context.embeds
        self.positions = np.concatenate(
            [context.positions, continue_positions(context.positions, n_new_positions)], axis=2
        )  # (3, B, C + n_new_positions)
        self.rows = list(range(context.batch_size))  # original batch index of each live row
        self.cache: KVCache | None = None
        self.cache_len = 0

    @property
    def context_len(self) -> int:
        return self.context_ids.shape[1]

    def forward(self, ids: np.ndarray, keep: int, logits_from: int = 0) -> StepOutput:
        """Run ids (n_live, T) placed right after the cache; keep the first `keep` positions' KV;
        predictions for positions logits_from..T-1. Positions inside the context take the
        context's embeddings (image features included)."""
        start, length = self.cache_len, ids.shape[1]
        assert 0 <= keep <= length, f"keep {keep} outside 0..{length}"
        assert start + length <= self.positions.shape[2], (
            f"forward reaches position {start + length}, the session holds {self.positions.shape[2]}"
        )
        n_context = min(max(self.context_len - start, 0), length)
        embeds = self.embeddings[ids[:, n_context:]]
        if n_context:
            embeds = np.concatenate([self.context_embeds[:, start : start + n_context], embeds], axis=1)
        batch = ids.shape[0]
        mask = np.broadcast_to(self._attention(length, start), (batch, length, start + length))
        out = self.decoder.run(
            embeds, self.positions[:, :, start : start + length], mask, self.cache, logits_from
        )
        end = start + keep
        self.cache = None if end == 0 else [(k[:, :, :end], v[:, :, :end]) for k, v in out.present]
        self.cache_len = end
        if self.forwards == 0:
            self.prefill_seconds = time.perf_counter() - self.started
        self.forwards += 1
        return out

    def keep_rows(self, keep: list[int]) -> None:
        """Continue with these live rows only (indices into the live rows)."""
        index = np.asarray(keep, dtype=np.int64)
        self.context_ids = self.context_ids[index]
        self.context_embeds = self.context_embeds[index]
        self.positions = self.positions[:, index]
        if self.cache is not None:
            self.cache = [(k[index], v[index]) for k, v in self.cache]
        self.rows = [self.rows[i] for i in keep]

    def elapsed(self) -> float:
        return time.perf_counter() - self.started
