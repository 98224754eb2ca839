"""Decoding attention masks (a numpy port of echo.model.masks): rows are queries, True = may attend."""

from __future__ import annotations

import numpy as np


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
