"""The block loop the multi-step and the one-step decoders share.

Each block (a window of block_size positions) starts as mask tokens and is denoised in steps; a
step runs the window with the context and all committed blocks in the KV cache and commits some
masked positions (a remasking strategy decides which). A completed block's KV is not written by a
forward of its own: it rides in the next block's first forward, whose input is
[previous block, clean ; current block], the previous block attending block-causally. The context
prefill rides in block 0's first forward the same way. `fused=False` writes it in a forward of its
own instead (the reference the fused path is tested against).

Block alignment: with prompt_attention "causal", blocks count from the response start; with
"block_causal" the whole sequence is cut into blocks and the first window completes the last
partial prompt block (its prompt tokens are fixed, its remaining positions generated).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from echo.decoding.context import Context
from echo.decoding.remasking import Strategy, num_transfer_tokens
from echo.decoding.result import BlockTrajectory, DecodeResult
from echo.decoding.session import DecodeSession
from echo.errors import UserError
from echo.model.masks import block_causal_mask
from echo.model.vlm import EchoVLM


@dataclass(frozen=True)
class BlockLayout:
    """Where the generated windows sit in the sequence."""

    context_len: int
    block_size: int
    first_start: int  # absolute index of window 0
    n_windows: int  # enough windows for max_new_tokens generated positions
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
        """Prompt tokens at the head of the window (non-zero only for block_causal's window 0)."""
        return max(0, self.context_len - self.start(window))

    @property
    def new_positions(self) -> int:
        return self.start(self.n_windows) - self.context_len


def check_decoding_args(block_size: int, max_new_tokens: int) -> None:
    if block_size < 1:
        raise UserError(f"block size must be >= 1, got {block_size}")
    if max_new_tokens < 1:
        raise UserError(f"max new tokens must be >= 1, got {max_new_tokens}")


def decode_blocks(
    model: EchoVLM,
    ctx: Context,
    block_size: int,
    max_new_tokens: int,
    *,
    strategy: Strategy,
    steps_per_block: int,
    threshold: float,
    fused: bool,
    record_trajectory: bool,
    return_logits: bool,
) -> DecodeResult:
    check_decoding_args(block_size, max_new_tokens)
    if steps_per_block < 1:
        raise UserError(f"steps per block must be >= 1, got {steps_per_block}")
    config = model.config
    mask_id, eos_id = config.mask_token_id, config.eos_token_id
    if mask_id is None:
        raise UserError("the model config has no mask_token_id, so it cannot decode by diffusion")
    layout = BlockLayout.plan(ctx.length, block_size, max_new_tokens, config.prompt_attention)
    batch = ctx.batch_size
    tokens: list[list[int]] = [[] for _ in range(batch)]
    steps: list[list[int]] = [[] for _ in range(batch)]
    trajectory: list[list[BlockTrajectory]] | None = [[] for _ in range(batch)] if record_trajectory else None
    window_logits: list[list[torch.Tensor]] = [[] for _ in range(batch)]
    confidences: list[list[float]] = [[] for _ in range(batch)]

    with torch.no_grad():
        session = DecodeSession(
            model,
            ctx,
            layout.new_positions,
            lambda q, past: block_causal_mask(q, block_size, past, layout.offset),
        )
        device = session.context_ids.device
        unwritten = session.context_ids[:, : layout.first_start]  # committed, KV not cached yet
        for window in range(layout.n_windows):
            start, prefix = layout.start(window), layout.prefix_len(window)
            n_live = len(session.rows)
            state = torch.full((n_live, block_size), mask_id, dtype=torch.long, device=device)
            state[:, :prefix] = session.context_ids[:, start : start + prefix]
            masked = (torch.arange(block_size, device=device) >= prefix).expand(n_live, -1).clone()
            budget = min(steps_per_block, block_size - prefix)
            row_steps = torch.zeros(n_live, dtype=torch.long, device=device)
            record = _BlockRecorder(state, prefix, config.vocab_size) if record_trajectory else None
            committed_confidence = torch.zeros(n_live, block_size, device=device)

            step = 0
            while bool(masked.any()):
                logits = _window_logits(session, unwritten if step == 0 else None, state, fused).float()
                if return_logits:
                    for i, row in enumerate(session.rows):
                        window_logits[row].append(logits[i].clone())
                logits[..., mask_id] = float("-inf")  # a committed token is never the mask itself
                probs = logits.softmax(dim=-1)  # (n_live, B, V)
                confidence, prediction = probs.max(dim=-1)
                remaining = masked.sum(dim=1)
                commit = strategy(
                    confidence, masked, num_transfer_tokens(remaining, budget - step), threshold
                )
                if record is not None:
                    record.step(step, state, remaining, commit, probs)
                state = torch.where(commit, prediction, state)
                committed_confidence = torch.where(commit, confidence, committed_confidence)
                masked &= ~commit
                row_steps += remaining > 0
                step += 1
                assert step <= budget or not bool(masked.any()), "a block overran its step budget"

            live: list[int] = []
            for i, row in enumerate(session.rows):
                generated = state[i, prefix:].tolist()
                generated_confidence = committed_confidence[i, prefix:].tolist()
                steps[row].append(int(row_steps[i]))
                if trajectory is not None and record is not None:
                    trajectory[row].append(record.finish(i, start, state[i]))
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
                state = state[torch.tensor(live, device=device)]
            unwritten = state
        seconds = session.elapsed()

    return DecodeResult(
        tokens=[row[:max_new_tokens] for row in tokens],
        forwards=session.forwards,
        seconds=seconds,
        prefill_seconds=session.prefill_seconds,
        steps_per_block=steps,
        trajectory=trajectory,
        logits=[torch.stack(rows) for rows in window_logits] if return_logits else None,
        confidences=[row[:max_new_tokens] for row in confidences],
    )


def _window_logits(
    session: DecodeSession, unwritten: torch.Tensor | None, state: torch.Tensor, fused: bool
) -> torch.Tensor:
    """(n_live, B, V) logits of the window; first writes the KV of `unwritten` (committed tokens
    between the cache and the window) in the same forward when fused, in its own otherwise."""
    n_unwritten = 0 if unwritten is None else unwritten.shape[1]
    if n_unwritten and fused:
        assert unwritten is not None
        return session.forward(torch.cat([unwritten, state], dim=1), keep=n_unwritten)[:, n_unwritten:]
    if n_unwritten:
        assert unwritten is not None
        session.forward(unwritten, keep=n_unwritten)
    return session.forward(state, keep=0)


class _BlockRecorder:
    """Collects one block's trajectory for every live row."""

    def __init__(self, state: torch.Tensor, prefix: int, vocab_size: int) -> None:
        n_live, block_size = state.shape
        self.prefix = prefix
        self.states: list[list[torch.Tensor]] = [[] for _ in range(n_live)]
        self.commit_step = torch.full((n_live, block_size), -1, dtype=torch.long, device=state.device)
        self.probs = torch.zeros(n_live, block_size, vocab_size, dtype=torch.float16, device=state.device)

    def step(
        self,
        step: int,
        state: torch.Tensor,
        remaining: torch.Tensor,
        commit: torch.Tensor,
        probs: torch.Tensor,
    ) -> None:
        for i in torch.nonzero(remaining > 0).flatten().tolist():
            self.states[i].append(state[i].clone())
        self.commit_step[commit] = step
        self.probs[commit] = probs[commit].to(torch.float16)

    def finish(self, i: int, start: int, final: torch.Tensor) -> BlockTrajectory:
        return BlockTrajectory(
            start=start,
            prefix_len=self.prefix,
            states=torch.stack([*self.states[i], final]).cpu(),
            tokens=final.clone().cpu(),
            commit_step=self.commit_step[i].cpu(),
            probs=self.probs[i].cpu(),
        )
