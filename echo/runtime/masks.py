"""Decoding attention masks (a numpy port of echo.model.masks): rows are queries, True = may attend.

A decoding step needs a (batch, q_len, past + q_len) mask; within a report the steps' shapes differ,
but every report of the same context length repeats the same sequence of them, so the session takes
them from a small cache (`attention_mask`) instead of building and broadcasting one per forward.

Rows of different context lengths share a batch left-padded to the longest (`pads`: per row, the
pad tokens before its context): `padded` hides a row's pad keys from every query, and lets a pad
query see only itself (a softmax needs one key; its output is never read)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

MASK_CACHE_SIZE = 512  # masks kept: a few reports' worth of AR steps; a block step's is ~3 KB


def causal_mask(q_len: int, past_len: int = 0) -> np.ndarray:
    """(q_len, past_len + q_len): query i (at absolute position past_len + i) sees keys j <= it."""
    query = np.arange(q_len)[:, None] + past_len
    key = np.arange(past_len + q_len)[None, :]
    return key <= query


def block_ids(positions: np.ndarray, block_size: int, offset: int = 0) -> np.ndarray:
    """Block index of each absolute position, counted from `offset`; earlier positions are one-token
    blocks with negative ids (so the part before `offset` is causal)."""
    relative = positions - offset
    return np.where(relative < 0, relative, relative // block_size)


def block_causal_mask(q_len: int, block_size: int, past_len: int = 0, offset: int = 0) -> np.ndarray:
    """(q_len, past_len + q_len): position i attends j iff block(j) <= block(i)."""
    query_block = block_ids(np.arange(q_len) + past_len, block_size, offset)[:, None]
    key_block = block_ids(np.arange(past_len + q_len), block_size, offset)[None, :]
    return key_block <= query_block


@dataclass(frozen=True)
class Causal:
    """AR decoding's attention (hashable, so its masks can be cached)."""

    def __call__(self, q_len: int, past_len: int) -> np.ndarray:
        return causal_mask(q_len, past_len)


@dataclass(frozen=True)
class BlockCausal:
    """Block diffusion's attention: blocks of `block_size` counted from `offset`."""

    block_size: int
    offset: int

    def __call__(self, q_len: int, past_len: int) -> np.ndarray:
        return block_causal_mask(q_len, self.block_size, past_len, self.offset)


Attention = Causal | BlockCausal


def padded(mask: np.ndarray, pads: tuple[int, ...], past_len: int = 0) -> np.ndarray:
    """A (q_len, past_len + q_len) mask for rows left-padded by `pads` -> (len(pads), q_len, keys):
    key j is hidden from row b's queries where j < pads[b], except a pad query's own key."""
    q_len, keys = mask.shape
    query = np.arange(q_len)[:, None] + past_len
    key = np.arange(keys)[None, :]
    visible = key[None] >= np.asarray(pads, dtype=np.int64)[:, None, None]  # (B, 1, keys)
    return mask[None] & (visible | (key == query)[None])


@lru_cache(maxsize=MASK_CACHE_SIZE)
def attention_mask(
    attention: Attention, batch: int, q_len: int, past_len: int, pads: tuple[int, ...] | None = None
) -> np.ndarray:
    """(batch, q_len, past_len + q_len) bool, C-contiguous as onnxruntime takes it, and read-only:
    the same array is handed to every forward of that shape. pads: per row, left-pad tokens before
    its context (None: no row is padded)."""
    shape = (batch, q_len, past_len + q_len)
    if pads is not None and any(pads):
        if len(pads) != batch:
            raise ValueError(f"{len(pads)} pad counts for a batch of {batch}")
        mask = np.ascontiguousarray(padded(attention(q_len, past_len), pads, past_len))
    else:
        mask = np.ascontiguousarray(np.broadcast_to(attention(q_len, past_len), shape))
    mask.flags.writeable = False
    return mask
