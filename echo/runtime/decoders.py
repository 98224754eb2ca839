"""The decoders on onnxruntime, step for step the same as echo.decoding (greedy AR, multi-step
block diffusion, one step per block with the fused block KV cache, and one step per block with
confidence-gated refinement), so the engine writes the same tokens as the torch model.
Tokenizer-free: ids in, ids out."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from echo.errors import UserError
from echo.runtime.graphs import DecoderGraph
from echo.runtime.masks import BlockCausal, Causal
from echo.runtime.remasking import (
    Strategy,
    commit,
    commit_low_confidence_static,
    commit_refine,
    num_transfer_tokens,
    remasking_strategy,
)
from echo.runtime.session import DecodeSession, PreparedContext


@dataclass
class DecodeOutput:
    tokens: list[list[int]]  # per row: response ids, eos and everything after it dropped
    forwards: int  # decoder forward passes (a batched pass counts once)
    seconds: float  # decoding, prefill included (vision encoding excluded: the caller times it)
    prefill_seconds: float  # the first forward (context prefill, fused with block 0 when diffusing)
    steps_per_block: list[list[int]]  # per row, per block: denoising steps (AR: 1 per token)
    # per row, one per token: the softmax probability of the token at the forward that committed it
    confidences: list[list[float]] = field(default_factory=list)


@dataclass(frozen=True)
class BlockLayout:
    """Where the generated windows sit in the sequence (echo.decoding.blocks.BlockLayout)."""

    context_len: int
    block_size: int
    first_start: int  # absolute index of window 0
    n_windows: int
    offset: int  # where block counting starts (block_causal_mask's offset)

    @classmethod
    def plan(
        cls, context_len: int, block_size: int, max_new_tokens: int, prompt_attention: str
    ) -> BlockLayout:
        if prompt_attention == "block_causal":
            first_start, offset = context_len - context_len % block_size, 0
        else:
            first_start, offset = context_len, context_len
        prefix = context_len - first_start
        n_windows = -(-(max_new_tokens + prefix) // block_size)
        return cls(context_len, block_size, first_start, n_windows, offset)

    def start(self, window: int) -> int:
        return self.first_start + window * self.block_size

    def prefix_len(self, window: int) -> int:
        return max(0, self.context_len - self.start(window))

    @property
    def new_positions(self) -> int:
        return self.start(self.n_windows) - self.context_len


def check_decoding_args(block_size: int, max_new_tokens: int) -> None:
    if block_size < 1:
        raise UserError(f"block size must be >= 1, got {block_size}")
    if max_new_tokens < 1:
        raise UserError(f"max new tokens must be >= 1, got {max_new_tokens}")


def decode_ar(
    decoder: DecoderGraph, embeddings: np.ndarray, context: PreparedContext, max_new_tokens: int, eos_id: int
) -> DecodeOutput:
    """One token per forward, causal attention; the prefill's last position gives the first token.
    Stops at eos (dropped) or after max_new_tokens."""
    check_decoding_args(1, max_new_tokens)
    tokens: list[list[int]] = [[] for _ in range(context.batch_size)]
    confidences: list[list[float]] = [[] for _ in range(context.batch_size)]
    session = DecodeSession(decoder, embeddings, context, max_new_tokens, Causal())
    prefill = session.forward(
        session.context_ids, keep=session.context_len, logits_from=session.context_len - 1
    )
    next_ids, next_probs = prefill.top_ids[:, -1], prefill.top_probs[:, -1]
    for i in range(max_new_tokens):
        live = []
        for j, (row, token) in enumerate(zip(session.rows, next_ids.tolist(), strict=True)):
            if token == eos_id:
                continue
            tokens[row].append(token)
            confidences[row].append(float(next_probs[j]))
            live.append(j)
        if not live or i == max_new_tokens - 1:
            break
        if len(live) < len(session.rows):
            session.keep_rows(live)
            next_ids = next_ids[live]
        step = session.forward(next_ids[:, None], keep=1)
        next_ids, next_probs = step.top_ids[:, -1], step.top_probs[:, -1]
    return DecodeOutput(
        tokens=tokens,
        forwards=session.forwards,
        seconds=session.elapsed(),
        prefill_seconds=session.prefill_seconds,
        steps_per_block=[[1] * (len(row) + (len(row) < max_new_tokens)) for row in tokens],
        confidences=confidences,
    )


def decode_multistep(
    decoder: DecoderGraph,
    embeddings: np.ndarray,
    context: PreparedContext,
    *,
    block_size: int,
    max_new_tokens: int,
    mask_id: int,
    eos_id: int,
    prompt_attention: str,
    remasking: str = "low_confidence_dynamic",
    steps_per_block: int | None = None,
    threshold: float = 0.85,
) -> DecodeOutput:
    """The RAD teacher's decoder: each block starts as masks and takes at most `steps_per_block`
    steps (default: block_size), each committing what the remasking strategy picks."""
    strategy = remasking_strategy(remasking)
    if not 0.0 <= threshold <= 1.0:
        raise UserError(f"threshold must be within [0, 1], got {threshold}")
    return decode_blocks(
        decoder,
        embeddings,
        context,
        block_size=block_size,
        max_new_tokens=max_new_tokens,
        mask_id=mask_id,
        eos_id=eos_id,
        prompt_attention=prompt_attention,
        strategy=strategy,
        steps_per_block=block_size if steps_per_block is None else steps_per_block,
        threshold=threshold,
    )


def decode_onestep(
    decoder: DecoderGraph,
    embeddings: np.ndarray,
    context: PreparedContext,
    *,
    block_size: int,
    max_new_tokens: int,
    mask_id: int,
    eos_id: int,
    prompt_attention: str,
) -> DecodeOutput:
    """The DCD student's decoder: every mask of a block takes its argmax in one forward whose input
    is [previous block, clean ; block_size masks]; N blocks cost N forwards."""
    return decode_blocks(
        decoder,
        embeddings,
        context,
        block_size=block_size,
        max_new_tokens=max_new_tokens,
        mask_id=mask_id,
        eos_id=eos_id,
        prompt_attention=prompt_attention,
        strategy=commit_low_confidence_static,
        steps_per_block=1,
        threshold=1.0,
    )


def decode_refine(
    decoder: DecoderGraph,
    embeddings: np.ndarray,
    context: PreparedContext,
    *,
    block_size: int,
    max_new_tokens: int,
    mask_id: int,
    eos_id: int,
    prompt_attention: str,
    threshold: float,
) -> DecodeOutput:
    """Confidence-gated refinement (echo.decoding.refine): each block in one forward; when some of
    its positions have confidence below `threshold`, ONE more forward of the block with the
    confident positions committed re-predicts them. One or two forwards per block."""
    if not 0.0 <= threshold <= 1.0:
        raise UserError(f"refine threshold must be within [0, 1], got {threshold}")
    return decode_blocks(
        decoder,
        embeddings,
        context,
        block_size=block_size,
        max_new_tokens=max_new_tokens,
        mask_id=mask_id,
        eos_id=eos_id,
        prompt_attention=prompt_attention,
        strategy=commit_refine,
        steps_per_block=2,
        threshold=threshold,
    )


def decode_blocks(
    decoder: DecoderGraph,
    embeddings: np.ndarray,
    context: PreparedContext,
    *,
    block_size: int,
    max_new_tokens: int,
    mask_id: int,
    eos_id: int,
    prompt_attention: str,
    strategy: Strategy,
    steps_per_block: int,
    threshold: float,
) -> DecodeOutput:
    """The block loop of echo.decoding.blocks.decode_blocks (fused), on numpy arrays.

    Left-padded rows (context.pads, rows of different context lengths) need the "causal" prompt
    layout, whose blocks start at each row's response start (the same index in every padded row);
    "block_causal" blocks sit at absolute positions, so its rows must share one context length."""
    check_decoding_args(block_size, max_new_tokens)
    if context.pads is not None and prompt_attention != "causal":
        raise ValueError(f"{prompt_attention!r} prompts cannot decode left-padded rows together")
    if steps_per_block < 1:
        raise UserError(f"steps per block must be >= 1, got {steps_per_block}")
    layout = BlockLayout.plan(context.length, block_size, max_new_tokens, prompt_attention)
    tokens: list[list[int]] = [[] for _ in range(context.batch_size)]
    steps: list[list[int]] = [[] for _ in range(context.batch_size)]
    confidences: list[list[float]] = [[] for _ in range(context.batch_size)]
    session = DecodeSession(
        decoder,
        embeddings,
        context,
        layout.new_positions,
        BlockCausal(block_size, layout.offset),
    )
    unwritten = session.context_ids[:, : layout.first_start]  # committed, KV not cached yet
    for window in range(layout.n_windows):
        start, prefix = layout.start(window), layout.prefix_len(window)
        n_live = len(session.rows)
        state = np.full((n_live, block_size), mask_id, dtype=np.int64)
        state[:, :prefix] = session.context_ids[:, start : start + prefix]
        budget = min(steps_per_block, block_size - prefix)
        if budget == 1:
            committed_confidence, row_steps = _commit_at_once(session, unwritten, state, prefix)
        else:
            committed_confidence, row_steps = _denoise(
                session, unwritten, state, prefix, strategy, budget, threshold
            )

        live: list[int] = []
        for i, row in enumerate(session.rows):
            generated = state[i, prefix:].tolist()
            generated_confidence = committed_confidence[i, prefix:].tolist()
            steps[row].append(int(row_steps[i]))
            if eos_id in generated:
                end = generated.index(eos_id)
                tokens[row].extend(generated[:end])
                confidences[row].extend(generated_confidence[:end])
            else:
                tokens[row].extend(generated)
                confidences[row].extend(generated_confidence)
                live.append(i)
        if not live or window == layout.n_windows - 1:
            break
        if len(live) < n_live:
            session.keep_rows(live)
            state = state[live]
        unwritten = state
    return DecodeOutput(
        tokens=[row[:max_new_tokens] for row in tokens],
        forwards=session.forwards,
        seconds=session.elapsed(),
        prefill_seconds=session.prefill_seconds,
        steps_per_block=steps,
        confidences=[row[:max_new_tokens] for row in confidences],
    )


@dataclass(frozen=True)
class _Window:
    top_ids: np.ndarray  # (n_live, block_size)
    top_probs: np.ndarray


def _window_output(session: DecodeSession, unwritten: np.ndarray | None, state: np.ndarray) -> _Window:
    """The window's predictions; the KV of `unwritten` (committed tokens between the cache and the
    window) is written in the same forward (fused)."""
    n_unwritten = 0 if unwritten is None else unwritten.shape[1]
    if n_unwritten:
        assert unwritten is not None
        out = session.forward(
            np.concatenate([unwritten, state], axis=1), keep=n_unwritten, logits_from=n_unwritten
        )
        return _Window(out.top_ids, out.top_probs)
    out = session.forward(state, keep=0)
    return _Window(out.top_ids, out.top_probs)


def _commit_at_once(
    session: DecodeSession, unwritten: np.ndarray, state: np.ndarray, prefix: int
) -> tuple[np.ndarray, np.ndarray]:
    """A budget of one step: every mask takes its prediction in the window's only forward,
    whatever the strategy (its quota is every mask), so nothing is ranked or tracked. Fills
    `state`; returns (committed confidence, steps per row) as _denoise does."""
    out = _window_output(session, unwritten, state)
    state[:, prefix:] = out.top_ids[:, prefix:]
    confidence = np.zeros(state.shape, dtype=np.float32)
    confidence[:, prefix:] = out.top_probs[:, prefix:]
    return confidence, np.ones(len(state), dtype=np.int64)


def _denoise(
    session: DecodeSession,
    unwritten: np.ndarray,
    state: np.ndarray,
    prefix: int,
    strategy: Strategy,
    budget: int,
    threshold: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Denoise the window's masks in at most `budget` forwards, each committing what the strategy
    picks; the first forward also writes `unwritten`. Fills `state`; returns the confidence each
    position was committed with and the steps each row took."""
    n_live, block_size = state.shape
    masked = np.ones((n_live, block_size), dtype=np.bool_)
    masked[:, :prefix] = False
    row_steps = np.zeros(n_live, dtype=np.int64)
    committed_confidence = np.zeros((n_live, block_size), dtype=np.float32)
    step = 0
    while bool(masked.any()):
        out = _window_output(session, unwritten if step == 0 else None, state)
        remaining = masked.sum(axis=1)
        chosen = commit(
            strategy, out.top_probs, masked, num_transfer_tokens(remaining, budget - step), threshold
        )
        np.copyto(state, out.top_ids, where=chosen)
        np.copyto(committed_confidence, out.top_probs, where=chosen)
        masked &= ~chosen
        row_steps += remaining > 0
        step += 1
        assert step <= budget or not bool(masked.any()), "a block overran its step budget"
    return committed_confidence, row_steps
