"""Training follows the decoders' block layout for block-causal prompts: blocks aligned to absolute
positions, the first response block being the tail of the context's last partial block."""

from __future__ import annotations

import pytest
import torch

from echo.decoding import decode_block_diffusion
from echo.model import EchoVLConfig, EchoVLM, block_causal_mask, rad_training_mask
from echo.model.masks import response_prefix_len
from echo.training.batches import Batcher
from echo.training.dcd_stage import _context, _item, trajectory_targets
from echo.training.distill import dcd_loss
from echo.training.objectives import (
    NoiseConfig,
    full_duplication_loss,
    live_blocks,
    prefix_len,
    rad_logits,
    rad_loss,
    sample_noise,
)

from .conftest import PREPROCESS, collect_with_eos_bias, example_set

B = 4


def _rows(text: str) -> torch.Tensor:
    return torch.tensor([[c == "1" for c in row] for row in text.split()])


def test_block_causal_rad_mask_literal():
    # C = 3, R = 3, B = 2: p = 1 context token (c2) opens the first response block and is copied
    # into both tails. Rows: [c0 c1][c2 xt0 xt1 xt2][c2 x00 x01 x02].
    expected = _rows(
        """
        1100000000
        1100000000
        1111000000
        1111000000
        1100111100
        1100111100
        1100001100
        1100001100
        1100001111
        1100001111
        """
    )
    assert torch.equal(rad_training_mask(3, 3, 2, "block_causal"), expected)


@pytest.mark.parametrize(("c", "r", "b"), [(7, 8, 4), (9, 5, 4), (8, 8, 4), (5, 9, 8)])
def test_the_clean_copy_attends_as_the_block_causal_decoder(c, r, b):
    """[shared context][clean tail] is exactly the inference block-causal mask over C + R."""
    p = response_prefix_len(c, b, "block_causal")
    mask = rad_training_mask(c, r, b, "block_causal")
    s, t = c - p, p + r
    clean = torch.cat([torch.arange(s), torch.arange(s + t, s + 2 * t)])
    assert torch.equal(mask[clean][:, clean], block_causal_mask(c + r, b))


def test_the_causal_layout_is_unchanged():
    mask = rad_training_mask(3, 4, 2)
    assert mask.shape == (11, 11)
    assert torch.equal(mask, rad_training_mask(3, 4, 2, "causal"))
    assert torch.equal(mask[:3, :3], torch.tril(torch.ones(3, 3, dtype=torch.bool)))


def _block_causal_model(tokenizer) -> EchoVLM:
    torch.manual_seed(0)
    config = EchoVLConfig.tiny(
        vocab_size=tokenizer.vocab_size,
        block_size=B,
        preprocess=PREPROCESS.to_dict(),
        prompt_attention="block_causal",
    )
    return EchoVLM(config).eval()


@pytest.fixture
def bc_batcher(tokenizer) -> Batcher:
    batcher = Batcher(example_set(4), tokenizer, "Describe the film.", PREPROCESS, B, 64)
    assert len(batcher.context(0)) % B != 0, "the test needs a partial last context block"
    return batcher


def test_rad_logits_equal_what_the_block_causal_decoder_sees(tokenizer, bc_batcher):
    """For every response block: the training row's logits at x_t equal an uncached block-causal
    forward of [context][clean blocks before][the noisy window] (what the decoder attends)."""
    model = _block_causal_model(tokenizer)
    batch = bc_batcher.make([0, 1], pad_with=tokenizer.eos_id)
    c, r = batch.context_ids.shape[1], batch.response_ids.shape[1]
    p = prefix_len(model, batch, B)
    assert p == c % B > 0
    noisy = torch.rand((2, r), generator=torch.Generator().manual_seed(0)) < 0.6
    with torch.no_grad():
        trained = rad_logits(model, batch, noisy, tokenizer.mask_id, B)  # (2, R, V)
        x_t = torch.where(noisy, tokenizer.mask_id, batch.response_ids)
        first = c - p
        for start in range(first, c + r, B):
            end = min(start + B, c + r)
            clean = torch.cat([batch.context_ids, batch.response_ids], dim=1)[:, :start]
            window = torch.cat([batch.context_ids, x_t], dim=1)[:, start:end]
            ids = torch.cat([clean, window], dim=1)
            logits = model.logits_for(
                ids, batch.pixel_values, batch.image_grid_thw, block_causal_mask(end, B)
            )
            lo = max(start, c)
            torch.testing.assert_close(trained[:, lo - c : end - c], logits[:, lo:end], atol=1e-5, rtol=1e-5)


def test_block_causal_noise_and_live_blocks_follow_absolute_blocks(tokenizer, bc_batcher):
    model = _block_causal_model(tokenizer)
    batch = bc_batcher.make([0, 1, 2, 3], pad_with=tokenizer.eos_id)
    p = prefix_len(model, batch, B)
    noise = NoiseConfig(block_size=B, mask_id=tokenizer.mask_id, eps=1e-3)
    # One t per absolute block: the first response block holds B - p positions, then B each.
    generator = torch.Generator().manual_seed(7)
    noisy = sample_noise(batch, noise, generator, p)
    generator.manual_seed(7)
    r = batch.response_ids.shape[1]
    t = 1e-3 + (1 - 1e-3) * torch.rand((4, -(-(p + r) // B)), generator=generator)
    draws = torch.rand((4, r), generator=generator)
    block = torch.tensor([0] * (B - p) + [1 + i // B for i in range(r - (B - p))])
    assert torch.equal(noisy, draws < t[:, block])
    live = live_blocks(batch, B, p)
    for row in range(4):
        length = int(batch.response_mask[row].sum())
        # ends on an absolute block edge (or the batch's last column)
        assert int(live[row].sum()) == min(r, -(-(p + length) // B) * B - p)
    loss = rad_loss(model, batch, noise, torch.Generator().manual_seed(0))
    # The full-duplication baseline attends the same way in block-causal mode: the same loss.
    baseline = full_duplication_loss(model, batch, noise, torch.Generator().manual_seed(0))
    assert float(loss) > 1.0 and float(baseline) == pytest.approx(float(loss), abs=1e-5)


def test_dcd_targets_start_at_the_response_start(tokenizer, bc_batcher):
    """Block-causal: the first window holds p context tokens; targets drop them, so the first
    target is the first generated token and commit steps are those of the generated positions."""
    model = _block_causal_model(tokenizer)
    batch = bc_batcher.make([0, 1], pad_with=tokenizer.eos_id)
    p = batch.context_ids.shape[1] % B
    result = decode_block_diffusion(
        model,
        _context(batch),
        block_size=B,
        max_new_tokens=12,
        remasking="low_confidence_dynamic",
        steps_per_block=B,
        threshold=0.85,
        record_trajectory=True,
    )
    assert result.trajectory is not None
    for row, blocks in enumerate(result.trajectory):
        assert blocks[0].prefix_len == p
        tokens, probs, steps = trajectory_targets(blocks)
        assert tokens.numel() == len(blocks) * B - p
        generated = result.tokens[row]
        assert tokens[: len(generated)].tolist() == generated  # first target = first generated token
        assert torch.equal(steps[: B - p], blocks[0].commit_step[p:])
        assert torch.equal(steps[B - p : 2 * B - p], blocks[1].commit_step)
        assert (steps >= 0).all() and int(steps[: B - p].max()) < B - p  # window 0's budget
        assert torch.equal(probs.float().argmax(-1), tokens)


def test_collect_in_block_causal_mode_targets_the_response(tokenizer, bc_batcher):
    model = _block_causal_model(tokenizer)
    collected, stats = collect_with_eos_bias(model, bc_batcher, [0, 1], tokenizer, 50.0, max_new_tokens=8)
    p = len(bc_batcher.context(0)) % B
    assert stats.kept == 2 and collected is not None
    assert collected.response_ids.shape[1] == B - p  # eos in window 0: only its generated part
    assert (collected.response_ids[:, 0] == tokenizer.eos_id).all()
    assert (collected.commit_step[:, : B - p] >= 0).all()
    # The student's loss runs on targets that are not a whole number of blocks long.
    batch, soft, commit, live = _item(bc_batcher, collected, [0, 1])
    ids = {"mask_id": tokenizer.mask_id, "eos_id": tokenizer.eos_id}
    assert torch.isfinite(dcd_loss(model, batch, soft, commit, live, block_size=B, **ids))


def test_block_causal_batches_end_on_an_absolute_block_and_causal_ones_on_a_response_block(tokenizer):
    """The decoders fill whole blocks: counted from position 0 with block-causal prompts (the
    context's last partial block opening the first), from the response start otherwise."""
    examples = example_set(4)
    for attention in ("block_causal", "causal"):
        batcher = Batcher(
            examples, tokenizer, "Describe the film.", PREPROCESS, B, 64, prompt_attention=attention
        )
        batch = batcher.make([0, 1, 2, 3], pad_with=tokenizer.eos_id)
        c, r = batch.context_ids.shape[1], batch.response_ids.shape[1]
        longest = max(len(batcher.responses[i]) for i in range(4))
        assert c % B != 0 and longest <= r < longest + B
        assert ((c + r) % B if attention == "block_causal" else r % B) == 0
