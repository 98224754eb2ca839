import pytest
import torch

from echo.training.objectives import (
    NoiseConfig,
    ar_loss,
    full_duplication_loss,
    live_blocks,
    rad_logits,
    rad_loss,
    sample_noise,
)


def test_batch_shapes_follow_the_block_grid(batcher, tokenizer):
    batch = batcher.make([0, 1, 2], pad_with=tokenizer.eos_id)
    assert batch.response_ids.shape[1] % 4 == 0
    assert batch.context_ids.shape == (3, 1 + 4 + 1 + len(batcher.prompt_ids))
    assert batch.pixel_values.shape[0] == 3 * 16
    for row, index in enumerate([0, 1, 2]):
        length = len(batcher.responses[index])
        assert batch.response_mask[row].sum() == length
        assert batch.response_ids[row, length - 1] == tokenizer.eos_id


def test_live_blocks_stop_after_the_block_holding_eos(batcher, tokenizer):
    batch = batcher.make([0, 2], pad_with=tokenizer.eos_id)
    live = live_blocks(batch, 4)
    for row in range(2):
        length = int(batch.response_mask[row].sum())
        assert int(live[row].sum()) == -(-length // 4) * 4


def test_noise_is_drawn_per_block(batcher, tokenizer):
    batch = batcher.make(list(range(8)), pad_with=tokenizer.eos_id)
    generator = torch.Generator().manual_seed(0)
    noisy = sample_noise(batch, NoiseConfig(block_size=4, mask_id=tokenizer.mask_id, eps=0.999), generator)
    assert noisy.float().mean() > 0.99  # t >= 0.999 masks (nearly) everything
    # t varies between blocks: per-block masked fractions spread far wider than one shared rate would.
    rates = torch.stack(
        [
            sample_noise(batch, NoiseConfig(block_size=4, mask_id=tokenizer.mask_id, eps=0.0), generator)
            .view(8, -1, 4)
            .float()
            .mean(-1)
            for _ in range(20)
        ]
    )
    assert 0.35 < rates.mean() < 0.65
    assert rates.std() > 0.25


def test_losses_are_finite_and_differentiable(model, batcher, tokenizer):
    batch = batcher.make([0, 1], pad_with=tokenizer.pad_id)
    for loss in (
        ar_loss(model, batch),
        rad_loss(model, batcher.make([0, 1], tokenizer.eos_id), NoiseConfig(4, tokenizer.mask_id)),
        full_duplication_loss(
            model, batcher.make([0, 1], tokenizer.eos_id), NoiseConfig(4, tokenizer.mask_id)
        ),
    ):
        assert torch.isfinite(loss)
        loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_noisy_block_never_sees_its_own_clean_tokens_or_later_blocks(model, batcher, tokenizer):
    """The RAD row's mask, seen through the model: x_t of block b depends on clean blocks < b only."""
    model.eval()
    batch = batcher.make([1], pad_with=tokenizer.eos_id)
    noisy = torch.ones_like(batch.response_ids, dtype=torch.bool)
    before = rad_logits(model, batch, noisy, tokenizer.mask_id, 4)
    changed = batch.response_ids.clone()
    changed[:, 4:8] = (changed[:, 4:8] + 7) % tokenizer.vocab_size  # alter clean block 1
    batch.response_ids = changed
    after = rad_logits(model, batch, noisy, tokenizer.mask_id, 4)
    torch.testing.assert_close(after[:, :8], before[:, :8])  # blocks 0 and 1 do not see clean block 1
    assert not torch.allclose(after[:, 8:12], before[:, 8:12])  # block 2 does


def test_rad_and_full_duplication_agree_on_what_the_noisy_response_sees(model, batcher, tokenizer):
    """Same noise, same model: both layouts give the noisy response the same view, so the same loss."""
    model.eval()
    noise = NoiseConfig(4, tokenizer.mask_id)
    batch = batcher.make([0, 3], pad_with=tokenizer.eos_id)
    rad = rad_loss(model, batch, noise, torch.Generator().manual_seed(5))
    full = full_duplication_loss(model, batch, noise, torch.Generator().manual_seed(5))
    assert float(rad) == pytest.approx(float(full), rel=1e-4)
