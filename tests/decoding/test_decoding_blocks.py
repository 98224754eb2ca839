"""Block decoding: multi-step block diffusion and one step per block, both prompt layouts."""

from __future__ import annotations

import pytest
import torch

from echo.decoding import decode_block_diffusion, decode_onestep, decode_onestep_unfused
from echo.errors import UserError

B = 4
CONTEXT_LEN = 11  # vision_start + 6 image tokens + vision_end + 3 prompt tokens
MODES = ["causal", "block_causal"]


def batch_forwards(steps_per_block: list[list[int]]) -> int:
    """Rows step together: each block costs its slowest live row's steps."""
    n_blocks = max(len(row) for row in steps_per_block)
    return sum(max(row[k] for row in steps_per_block if len(row) > k) for k in range(n_blocks))


def first_window(mode: str) -> tuple[int, int]:
    """(start, prompt tokens at its head) of the first generated window."""
    return (CONTEXT_LEN, 0) if mode == "causal" else (CONTEXT_LEN - CONTEXT_LEN % B, CONTEXT_LEN % B)


@pytest.mark.parametrize("mode", MODES)
def test_fused_onestep_equals_the_unfused_two_pass(tiny, mode: str) -> None:
    model = tiny.model(prompt_attention=mode, block_size=B)
    ctx = tiny.context(model, rows=2)
    fused = decode_onestep(model, ctx, B, 16, return_logits=True)
    unfused = decode_onestep_unfused(model, ctx, B, 16, return_logits=True)
    assert fused.tokens == unfused.tokens
    assert all(len(row) == 16 for row in fused.tokens)
    for ours, reference in zip(fused.logits, unfused.logits, strict=True):
        torch.testing.assert_close(ours, reference, atol=1e-4, rtol=1e-4)
    n_blocks = fused.logits[0].shape[0]
    assert n_blocks == (4 if mode == "causal" else 5)  # block_causal: 1 generated slot in window 0
    assert fused.forwards == n_blocks
    assert unfused.forwards == 2 * n_blocks
    assert fused.steps_per_block == [[1] * n_blocks] * 2


@pytest.mark.parametrize("mode", MODES)
def test_onestep_window_logits_equal_an_uncached_block_causal_forward(tiny, mode: str) -> None:
    model = tiny.model(prompt_attention=mode, block_size=B)
    ctx = tiny.context(model, rows=1)
    result = decode_onestep(model, ctx, B, 12, return_logits=True)
    start, prefix = first_window(mode)
    mask_id = model.config.mask_token_id
    committed: list[int] = []  # response tokens before the window
    for window, logits in enumerate(result.logits[0]):
        n_slots = B - (prefix if window == 0 else 0)
        tail = committed + [mask_id] * n_slots
        reference = tiny.uncached_window_logits(model, ctx, 0, tail, B)
        torch.testing.assert_close(logits, reference, atol=1e-4, rtol=1e-4)
        suppressed = reference.clone()
        suppressed[:, mask_id] = float("-inf")
        committed += suppressed.argmax(-1)[B - n_slots :].tolist()
    assert result.tokens[0] == committed[:12]
    assert start + len(result.logits[0]) * B >= CONTEXT_LEN + 12


@pytest.mark.parametrize("mode", MODES)
def test_every_step_of_block_diffusion_equals_an_uncached_forward(tiny, mode: str) -> None:
    model = tiny.model(prompt_attention=mode, block_size=B)
    ctx = tiny.context(model, rows=1)
    result = decode_block_diffusion(
        model, ctx, B, 8, "low_confidence_static", 2, record_trajectory=True, return_logits=True
    )
    logits = iter(result.logits[0])
    committed: list[int] = []
    for block in result.trajectory[0]:
        for state in block.states[:-1]:  # the block before each step
            tail = committed + state[block.prefix_len :].tolist()
            reference = tiny.uncached_window_logits(model, ctx, 0, tail, B)
            torch.testing.assert_close(next(logits), reference, atol=1e-4, rtol=1e-4)
        committed += block.tokens[block.prefix_len :].tolist()
    assert next(logits, None) is None


@pytest.mark.parametrize(
    ("remasking", "steps", "threshold", "expected_steps"),
    [
        ("sequential", 4, 0.85, 4),
        ("sequential", 2, 0.85, 2),
        ("low_confidence_static", 3, 0.85, 3),
        ("low_confidence_static", 9, 0.85, 4),  # a budget above the block size: one token per step
        ("low_confidence_dynamic", 4, 0.0, 1),  # tau = 0: the whole block in one step
        ("low_confidence_dynamic", 2, 1.0, 2),  # nothing reaches tau = 1: the budget's floor
    ],
)
def test_forward_counts_follow_the_strategy(
    tiny, remasking: str, steps: int, threshold: float, expected_steps: int
) -> None:
    model = tiny.model(block_size=B)
    ctx = tiny.context(model, rows=2)
    result = decode_block_diffusion(model, ctx, B, 12, remasking, steps, threshold)
    assert result.steps_per_block == [[expected_steps] * 3] * 2
    assert result.forwards == 3 * expected_steps  # the KV write rides in each next block's first step
    assert all(len(row) == 12 for row in result.tokens)


def test_dynamic_respects_the_budget(tiny) -> None:
    model = tiny.model(block_size=B)
    result = decode_block_diffusion(
        model, tiny.context(model, rows=2), B, 16, "low_confidence_dynamic", 2, 0.3
    )
    assert all(1 <= steps <= 2 for row in result.steps_per_block for steps in row)
    assert result.forwards == batch_forwards(result.steps_per_block)


def test_sequential_with_block_size_steps_commits_left_to_right(tiny) -> None:
    model = tiny.model(block_size=B)
    result = decode_block_diffusion(
        model, tiny.context(model, rows=1), B, 8, "sequential", B, record_trajectory=True
    )
    mask_id = model.config.mask_token_id
    for block in result.trajectory[0]:
        assert block.commit_step.tolist() == [0, 1, 2, 3]
        for step, state in enumerate(block.states):
            assert (state[:step] != mask_id).all() and (state[step:] == mask_id).all()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("remasking", ["sequential", "low_confidence_static", "low_confidence_dynamic"])
def test_trajectory_records_what_dcd_distils(tiny, mode: str, remasking: str) -> None:
    model = tiny.model(prompt_attention=mode, block_size=B)
    result = decode_block_diffusion(
        model, tiny.context(model, rows=2), B, 10, remasking, 3, record_trajectory=True
    )
    mask_id = model.config.mask_token_id
    start, prefix = first_window(mode)
    for row, blocks in enumerate(result.trajectory):
        assert [b.start for b in blocks] == [start + i * B for i in range(len(blocks))]
        assert [b.prefix_len for b in blocks] == [prefix] + [0] * (len(blocks) - 1)
        generated: list[int] = []
        for block, steps in zip(blocks, result.steps_per_block[row], strict=True):
            p = block.prefix_len
            assert block.states.shape == (steps + 1, B)
            assert (block.states[0, p:] == mask_id).all()  # every block starts as masks
            assert torch.equal(block.states[-1], block.tokens) and (block.tokens != mask_id).all()
            assert block.probs.shape == (B, 48) and block.probs.dtype == torch.float16
            assert (block.commit_step[:p] == -1).all() and (block.probs[:p] == 0).all()
            assert ((block.commit_step[p:] >= 0) & (block.commit_step[p:] < steps)).all()
            for position in range(p, B):
                probs = block.probs[position].float()
                assert abs(float(probs.sum()) - 1) < 1e-2
                assert probs[block.tokens[position]] == probs.max()  # committed = argmax at commit time
                step = int(block.commit_step[position])  # committed at that step, masked before it
                assert block.states[step, position] == mask_id and block.states[step + 1, position] != mask_id
            generated += block.tokens[p:].tolist()
        assert result.tokens[row] == generated[:10]


def test_eos_finishes_its_block_and_drops_the_rest(tiny) -> None:
    model = tiny.model(block_size=B)
    ctx = tiny.context(model, rows=2)
    free = decode_block_diffusion(model, ctx, B, 16, "low_confidence_static", 2)
    row = free.tokens[0]
    at = next(p for p in range(B, 2 * B) if row[p] not in row[:p])  # first new token of block 1
    eos = row[at]
    model.config.eos_token_id = eos
    stopped = decode_block_diffusion(model, ctx, B, 16, "low_confidence_static", 2, record_trajectory=True)
    assert stopped.tokens[0] == row[:at]
    assert len(stopped.trajectory[0]) == 2 and stopped.steps_per_block[0] == [2, 2]  # its block completed
    assert stopped.trajectory[0][1].tokens.tolist() == row[B : 2 * B]  # eos and what follows it, kept there
    other = free.tokens[1]
    assert stopped.tokens[1] == (other[: other.index(eos)] if eos in other else other)
    assert stopped.forwards == batch_forwards(stopped.steps_per_block)


def test_eos_in_the_first_block_ends_onestep_after_one_forward(tiny) -> None:
    model = tiny.model(block_size=B)
    ctx = tiny.context(model, rows=1)
    first = decode_onestep(model, ctx, B, 16).tokens[0]
    model.config.eos_token_id = first[2]
    result = decode_onestep(model, ctx, B, 16)
    assert result.tokens == [first[: first.index(first[2])]] and result.forwards == 1


def test_max_new_tokens_need_not_be_a_multiple_of_the_block(tiny) -> None:
    model = tiny.model(block_size=B)
    result = decode_block_diffusion(model, tiny.context(model, rows=2), B, 6, "sequential", 1)
    assert [len(row) for row in result.tokens] == [6, 6] and result.forwards == 2


def test_bad_options_are_user_errors(tiny) -> None:
    model = tiny.model(block_size=B)
    ctx = tiny.context(model, rows=1)
    with pytest.raises(UserError, match="steps per block must be >= 1, got 0"):
        decode_block_diffusion(model, ctx, B, 8, "sequential", 0)
    with pytest.raises(UserError, match=r"threshold must be within \[0, 1\], got 1.5"):
        decode_block_diffusion(model, ctx, B, 8, "low_confidence_dynamic", 2, 1.5)
    with pytest.raises(UserError, match="unknown remasking strategy 'topk'"):
        decode_block_diffusion(model, ctx, B, 8, "topk", 2)
    with pytest.raises(UserError, match="block size must be >= 1, got 0"):
        decode_onestep(model, ctx, 0, 8)
    model.config.mask_token_id = None
    with pytest.raises(UserError, match="the model config has no mask_token_id"):
        decode_onestep(model, ctx, B, 8)
