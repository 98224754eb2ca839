"""Attention masks as pure functions: bool tensors, rows are queries, True = may attend.

Each layout is a few named parts OR-ed together (as bd3lms' `block_diff_mask`). Masks are 2D;
`EchoVLM.forward` broadcasts a (T, S) mask over the batch.
"""

from __future__ import annotations

import torch


def causal_mask(q_len: int, past_len: int = 0) -> torch.Tensor:
    """(q_len, past_len + q_len): query i (at absolute position past_len + i) sees keys j <= it."""
    _check_lengths(q_len=q_len, past_len=past_len)
    query = torch.arange(q_len)[:, None] + past_len
    key = torch.arange(past_len + q_len)[None, :]
    return key <= query


def block_ids(positions: torch.Tensor, block_size: int, offset: int = 0) -> torch.Tensor:
    """Block index of each absolute position, blocks counted from `offset`.

    Positions before `offset` are one-token blocks with negative ids, so the part before `offset`
    is plain causal: offset = context length gives "causal context, block-causal response"."""
    relative = positions - offset
    return torch.where(relative < 0, relative, torch.div(relative, block_size, rounding_mode="floor"))


def block_causal_mask(q_len: int, block_size: int, past_len: int = 0, offset: int = 0) -> torch.Tensor:
    """(q_len, past_len + q_len): position i attends j iff block(j) <= block(i).

    Bidirectional inside a block, causal between blocks. offset=0 cuts the whole sequence into blocks
    (the released checkpoints' block-causal prompt); offset=C counts blocks from the response start."""
    _check_lengths(q_len=q_len, past_len=past_len, block_size=block_size)
    query_block = block_ids(torch.arange(q_len) + past_len, block_size, offset)[:, None]
    key_block = block_ids(torch.arange(past_len + q_len), block_size, offset)[None, :]
    return key_block <= query_block


def rad_training_mask(
    context_len: int, response_len: int, block_size: int, prompt_attention: str = "causal"
) -> torch.Tensor:
    """(S + 2T, S + 2T) for rows [shared context S][x_t tail T][x_0 tail T].

    "causal" (S = C, T = R): the context is causal and blocks count from the response start.
    "block_causal" (the decoders' layout): blocks count from position 0 over the whole sequence;
    the last partial context block (p = C % B tokens) opens the first response block, so it is
    copied at the head of both tails: S = C - p, T = p + R, and the shared context is block-causal.

    A tail token of block b (either copy) sees the whole shared context; a noisy token sees the
    noisy tokens of block b and the clean blocks < b; a clean token sees the clean blocks <= b.
    The last block may be partial."""
    _check_lengths(context_len=context_len, response_len=response_len, block_size=block_size)
    offset, prefix = _block_origin(context_len, block_size, prompt_attention)
    s, t = context_len - prefix, prefix + response_len
    index = torch.arange(s + 2 * t)
    is_context = index < s
    is_noisy = (index >= s) & (index < s + t)
    is_clean = index >= s + t
    # Absolute position of every row (both tail copies share the tail's positions) and its block;
    # positions before `offset` are one-token blocks (block_ids), so a causal context stays causal.
    position = torch.where(is_context, index, s + (index - s) % max(t, 1))
    block = block_ids(position, block_size, offset)

    q_ctx, k_ctx = is_context[:, None], is_context[None, :]
    q_noisy, k_noisy = is_noisy[:, None], is_noisy[None, :]
    q_clean, k_clean = is_clean[:, None], is_clean[None, :]
    q_block, k_block = block[:, None], block[None, :]

    context_block_causal = q_ctx & k_ctx & (k_block <= q_block)
    tail_sees_context = (q_noisy | q_clean) & k_ctx
    noisy_block_diagonal = q_noisy & k_noisy & (k_block == q_block)
    noisy_sees_earlier_clean = q_noisy & k_clean & (k_block < q_block)
    clean_block_causal = q_clean & k_clean & (k_block <= q_block)
    return (
        context_block_causal
        | tail_sees_context
        | noisy_block_diagonal
        | noisy_sees_earlier_clean
        | clean_block_causal
    )


def response_prefix_len(context_len: int, block_size: int, prompt_attention: str) -> int:
    """Context tokens that open the first response block: C % B for "block_causal", else 0."""
    return _block_origin(context_len, block_size, prompt_attention)[1]


def _block_origin(context_len: int, block_size: int, prompt_attention: str) -> tuple[int, int]:
    """(offset where block counting starts, context tokens in the first response block)."""
    if prompt_attention == "block_causal":
        return 0, context_len % block_size
    if prompt_attention == "causal":
        return context_len, 0
    raise ValueError(f"prompt_attention must be 'causal' or 'block_causal', got {prompt_attention!r}")


def full_duplication_mask(seq_len: int, block_size: int, context_len: int = 0) -> torch.Tensor:
    """(2L, 2L) for rows [x_t of the whole sequence][x_0 of the whole sequence]: the earlier
    conversion that duplicates context and response alike (bd3lms `block_diff_mask`), kept only to
    measure what RAD saves. Blocks count from `context_len`; the context before it is made of
    one-token blocks (causal), as in `block_ids`.

    x_t of block b sees x_t of block b and x_0 of blocks < b; x_0 of block b sees x_0 of blocks <= b."""
    _check_lengths(seq_len=seq_len, block_size=block_size, context_len=context_len)
    if context_len > seq_len:
        raise ValueError(f"context_len {context_len} exceeds seq_len {seq_len}")
    n = 2 * seq_len
    index = torch.arange(n)
    is_clean = index >= seq_len
    block = block_ids(index % max(seq_len, 1), block_size, context_len)

    q_clean, k_clean = is_clean[:, None], is_clean[None, :]
    q_block, k_block = block[:, None], block[None, :]

    noisy_block_diagonal = ~q_clean & ~k_clean & (k_block == q_block)
    noisy_sees_earlier_clean = ~q_clean & k_clean & (k_block < q_block)
    clean_block_causal = q_clean & k_clean & (k_block <= q_block)
    return noisy_block_diagonal | noisy_sees_earlier_clean | clean_block_causal


def _check_lengths(**values: int) -> None:
    for name, value in values.items():
        minimum = 1 if name == "block_size" else 0
        if not isinstance(value, int) or value < minimum:
            raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
