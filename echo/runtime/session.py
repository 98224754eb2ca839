"""The state one decoding call threads through its forwards (a numpy port of
echo.decoding.session): context embedded once, positions computed once, a KV cache that always
ends where the next forward's input starts, and rows that leave the batch when they finish.

A step does little besides the graph call: the attention mask comes from a cache of read-only
masks (echo.runtime.masks), the KV cache reuses one buffer (echo.runtime.kv_cache), and token
embeddings are one gather from the table."""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from echo.runtime.graphs import DecoderGraph, StepOutput
from echo.runtime.masks import Attention, attention_mask
from echo.runtime.positions import continue_positions


@dataclass
class PreparedContext:
    """B rows of one context length: ids, their embeddings (image features placed) and positions."""

    ids: np.ndarray  # (B, C) int64
    embeds: np.ndarray  # (B, C, H)
    positions: np.ndarray  # (3, B, C) int64
    # per row: pad tokens left of its context (shorter contexts padded to C; keys masked), or None
    pads: tuple[int, ...] | None = None

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
        attention: Attention,
    ) -> None:
        self.decoder = decoder
        # (V, H) token embedding table; a plain ndarray view of a memory map gathers without the
        # np.memmap subclass's per-index overhead (pages are still read as tokens are looked up)
        self.embeddings = np.asarray(embeddings)
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
        self.pads = context.pads
        self.cache = decoder.new_cache(context.batch_size, self.positions.shape[2])

    @property
    def context_len(self) -> int:
        return self.context_ids.shape[1]

    @property
    def cache_len(self) -> int:
        return self.cache.length

    def forward(self, ids: np.ndarray, keep: int, logits_from: int = 0) -> StepOutput:
        """Run ids (n_live, T) placed right after the cache; keep the first `keep` positions' KV;
        predictions for positions logits_from..T-1. Positions inside the context take the
        context's embeddings (image features included)."""
        start, length = self.cache.length, ids.shape[1]
        assert 0 <= keep <= length, f"keep {keep} outside 0..{length}"
        assert start + length <= self.positions.shape[2], (
            f"forward reaches position {start + length}, the session holds {self.positions.shape[2]}"
        )
        n_context = min(max(self.context_len - start, 0), length)
        embeds = self.embeddings.take(ids[:, n_context:] if n_context else ids, axis=0)
        if n_context:
            embeds = np.concatenate([self.context_embeds[:, start : start + n_context], embeds], axis=1)
        out = self.decoder.run(
            embeds,
            self.positions[:, :, start : start + length],
            attention_mask(self._attention, ids.shape[0], length, start, self.pads),
            self.cache.past,
            _logits_positions(logits_from, length),
        )
        self.cache.keep(out.present, start + keep)
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
        self.cache.keep_rows(index)
        self.rows = [self.rows[i] for i in keep]
        self.pads = None if self.pads is None else tuple(self.pads[i] for i in keep)

    def elapsed(self) -> float:
        return time.perf_counter() - self.started


@lru_cache(maxsize=256)
def _logits_positions(first: int, length: int) -> np.ndarray:
    """(length - first,) int64: the positions a forward predicts; read-only, shared by the steps."""
    positions = np.arange(first, length, dtype=np.int64)
    positions.flags.writeable = False
    return positions
