"""The state one decoding call threads through its forwards.

The context is embedded once (vision tower included) and its M-RoPE positions computed once;
positions for the response continue from them. The KV cache holds everything committed so far and
always ends where the next forward's input starts. Rows that finish leave the batch.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from echo.decoding.context import Context
from echo.model.rope import continue_positions
from echo.model.text import KVCache
from echo.model.vlm import EchoVLM

# (query length, past length) -> (query length, past length + query length) bool mask
MaskBuilder = Callable[[int, int], torch.Tensor]


class DecodeSession:
    def __init__(self, model: EchoVLM, ctx: Context, n_new_positions: int, attention: MaskBuilder) -> None:
        self.model = model
        self.started = time.perf_counter()
        self.prefill_seconds = 0.0
        self.forwards = 0
        self._attention = attention
        device = model.device
        self.context_ids = ctx.input_ids.to(device)  # (B, C)
        grid = None if ctx.image_grid_thw is None else ctx.image_grid_thw.to(device)
        self.context_embeds = model.embed(self.context_ids, ctx.pixel_values, grid)  # (B, C, H)
        context_positions = model.rope_index(self.context_ids, grid)  # (3, B, C)
        self.positions = torch.cat(
            [context_positions, continue_positions(context_positions, n_new_positions)], dim=2
        )  # (3, B, C + n_new_positions)
        self.rows = list(range(ctx.batch_size))  # the original batch index of each live row
        self.cache: KVCache | None = None
        self.cache_len = 0

    @property
    def context_len(self) -> int:
        return self.context_ids.shape[1]

    def forward(self, ids: torch.Tensor, keep: int) -> torch.Tensor:
        """Run ids (n_live, T) placed right after the cache; keep the first `keep` positions' KV.

        Positions inside the context take the context's embeddings (image features included), so
        ids there are ignored; later positions embed their ids as plain tokens."""
        start, length = self.cache_len, ids.shape[1]
        assert 0 <= keep <= length, f"keep {keep} outside 0..{length}"
        assert start + length <= self.positions.shape[2], (
            f"forward reaches position {start + length}, the session holds {self.positions.shape[2]}"
        )
        n_context = min(max(self.context_len - start, 0), length)
        embeds = self.model.model.embed_tokens(ids[:, n_context:])
        if n_context:
            embeds = torch.cat([self.context_embeds[:, start : start + n_context], embeds], dim=1)
        mask = self._attention(length, start).to(embeds.device)
        logits, present = self.model(embeds, self.positions[:, :, start : start + length], mask, self.cache)
        end = start + keep
        self.cache = None if end == 0 else [(k[:, :, :end], v[:, :, :end]) for k, v in present]
        self.cache_len = end
        if self.forwards == 0:
            _synchronize(logits.device)
            self.prefill_seconds = time.perf_counter() - self.started
        self.forwards += 1
        return logits

    def reset_cache(self) -> None:
        self.cache, self.cache_len = None, 0

    def keep_rows(self, keep: list[int]) -> None:
        """Continue with these live rows only (indices into the live rows)."""
        index = torch.tensor(keep, dtype=torch.long, device=self.context_ids.device)
        self.context_ids = self.context_ids[index]
        self.context_embeds = self.context_embeds[index]
        self.positions = self.positions[:, index]
        if self.cache is not None:
            self.cache = [(k[index], v[index]) for k, v in self.cache]
        self.rows = [self.rows[i] for i in keep]

    def elapsed(self) -> float:
        _synchronize(self.model.device)
        return time.perf_counter() - self.started


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
