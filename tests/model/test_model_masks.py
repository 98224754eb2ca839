"""Attention masks: shapes and tiny literals (rows are queries, 1 = may attend)."""

from __future__ import annotations

import pytest
import torch

from echo.model import block_causal_mask, causal_mask, full_duplication_mask, rad_training_mask


def literal(rows: str) -> torch.Tensor:
    return torch.tensor([[c == "1" for c in row] for row in rows.split()])


def test_causal_mask() -> None:
    assert torch.equal(causal_mask(3), literal("100 110 111"))


def test_causal_mask_with_a_past() -> None:
    assert torch.equal(causal_mask(2, past_len=3), literal("11110 11111"))


def test_block_causal_mask_cuts_the_whole_sequence() -> None:
    expected = literal(
        """
        11000
        11000
        11110
        11110
        11111
        """
    )
    assert torch.equal(block_causal_mask(5, block_size=2), expected)


def test_block_causal_mask_with_offset_keeps_the_context_causal() -> None:
    # 3 context tokens (causal), then blocks of 2 counted from the response start
    expected = literal(
        """
        1000000
        1100000
        1110000
        1111100
        1111100
        1111111
        1111111
        """
    )
    assert torch.equal(block_causal_mask(7, block_size=2, offset=3), expected)


def test_block_causal_mask_for_a_window_after_the_cache() -> None:
    # the cache holds 3 context tokens and one block of 2; the window is the next block
    full = block_causal_mask(7, block_size=2, offset=3)
    window = block_causal_mask(2, block_size=2, past_len=5, offset=3)
    assert window.shape == (2, 7)
    assert torch.equal(window, full[5:])


def test_rad_mask_two_blocks_of_two() -> None:
    expected = literal(
        """
        11......
        11......
        ..1111..
        ..1111..
        ....11..
        ....11..
        ....1111
        ....1111
        """
    )
    assert torch.equal(rad_training_mask(0, 4, 2), expected)


def test_rad_mask_with_context_and_a_partial_last_block() -> None:
    # C=2, R=3, B=2: blocks {0,1} and {2}; rows [c0 c1][t0 t1 t2][x0 x1 x2]
    expected = literal(
        """
        10000000
        11000000
        11110000
        11110000
        11001110
        11000110
        11000110
        11000111
        """
    )
    mask = rad_training_mask(2, 3, 2)
    assert mask.shape == (8, 8) and mask.dtype == torch.bool
    assert torch.equal(mask, expected)


def test_rad_mask_clean_stream_equals_block_causal_inference() -> None:
    # the x_0 rows see exactly what decoding's block-causal mask shows a committed block
    c, r, b = 5, 7, 3
    rad = rad_training_mask(c, r, b)
    clean_rows = rad[c + r :][:, torch.cat([torch.arange(c), torch.arange(c + r, c + 2 * r)])]
    assert torch.equal(clean_rows, block_causal_mask(c + r, b, offset=c)[c:])


def test_full_duplication_mask_is_bd3lms_block_diff_mask() -> None:
    # rows [x_t block 0, block 1][x_0 block 0, block 1]
    expected = literal(
        """
        11000000
        11000000
        00111100
        00111100
        00001100
        00001100
        00001111
        00001111
        """
    )
    assert torch.equal(full_duplication_mask(4, 2), expected)
    assert torch.equal(full_duplication_mask(10, 4), _block_diff_reference(10, 4))


def _block_diff_reference(n: int, block_size: int) -> torch.Tensor:
    """bd3lms models/dit.py::block_diff_mask, written out as in the paper's code."""
    q_idx = torch.arange(2 * n)[:, None]
    kv_idx = torch.arange(2 * n)[None, :]
    x0_flag_q, x0_flag_kv = q_idx >= n, kv_idx >= n
    block_q = torch.where(x0_flag_q, (q_idx - n) // block_size, q_idx // block_size)
    block_kv = torch.where(x0_flag_kv, (kv_idx - n) // block_size, kv_idx // block_size)
    block_diagonal = (block_q == block_kv) & (x0_flag_q == x0_flag_kv)
    offset_block_causal = (block_q > block_kv) & x0_flag_kv & ~x0_flag_q
    block_causal = (block_q >= block_kv) & x0_flag_kv & x0_flag_q
    return block_diagonal | offset_block_causal | block_causal


def test_full_duplication_mask_with_a_causal_context() -> None:
    # L=3 with a context of 1 and one block of 2: rows [t_c t0 t1][x_c x0 x1]
    expected = literal(
        """
        100000
        011100
        011100
        000100
        000111
        000111
        """
    )
    assert torch.equal(full_duplication_mask(3, 2, context_len=1), expected)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: causal_mask(-1), "q_len must be an integer >= 0, got -1"),
        (lambda: block_causal_mask(4, 0), "block_size must be an integer >= 1, got 0"),
        (lambda: rad_training_mask(2, 3, 0), "block_size must be an integer >= 1, got 0"),
        (lambda: full_duplication_mask(2, 2, context_len=3), "context_len 3 exceeds seq_len 2"),
    ],
)
def test_bad_mask_arguments(call, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()
