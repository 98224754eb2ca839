"""DCD's target store keeps K tokens per position (plus the remaining mass), not V."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from echo.training.dcd_stage import factorise
from echo.training.distill import SoftTargets, dcd_loss, step_weights, truncated_kl
from echo.training.objectives import rad_logits

from .conftest import collect_with_eos_bias


def _dense_loss(model, batch, probs, commit, live, tokenizer, eos_weight=1.0):
    """The loss as it was with a dense (n, R, V) store: the reference for K = V."""
    all_masked = torch.ones_like(batch.response_ids, dtype=torch.bool)
    log_q = F.log_softmax(rad_logits(model, batch, all_masked, tokenizer.mask_id, 4).float(), dim=-1)
    p = probs.float()
    kl = (p * (torch.log(p.clamp_min(1e-8)) - log_q)).sum(-1)
    weights = step_weights(commit, 4, "decreasing") * live
    loss = (kl * weights).sum() / weights.sum().clamp_min(1e-6)
    eos = live & (batch.response_ids == tokenizer.eos_id)
    return loss + eos_weight * F.nll_loss(log_q[eos], batch.response_ids[eos])


def _teacher_like(batch, vocab: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    logits = 3.0 * torch.randn(batch.response_ids.shape + (vocab,), generator=generator)
    logits.scatter_(-1, batch.response_ids.unsqueeze(-1), 8.0)  # the committed token is the argmax
    return logits.softmax(-1).to(torch.float16)


def _loss(model, batch, soft, commit, live, tokenizer, **options):
    ids = {"mask_id": tokenizer.mask_id, "eos_id": tokenizer.eos_id}
    return dcd_loss(model, batch, soft, commit, live, block_size=4, **ids, **options)


def test_k_equal_to_the_vocabulary_is_the_dense_loss(model, batcher, tokenizer):
    batch = batcher.make([0, 1], pad_with=tokenizer.eos_id)
    probs = _teacher_like(batch, tokenizer.vocab_size)
    commit = torch.randint(0, 4, batch.response_ids.shape, generator=torch.Generator().manual_seed(1))
    live = batch.response_mask
    soft = SoftTargets.from_dense(probs, tokenizer.vocab_size, batch.response_ids)
    assert float(soft.rest.abs().max()) == 0.0  # nothing outside K = V tokens
    truncated = _loss(model, batch, soft, commit, live, tokenizer)
    with torch.no_grad():
        dense = _dense_loss(model, batch, probs, commit, live, tokenizer)
    assert truncated.item() == pytest.approx(dense.item(), abs=1e-6)
    assert truncated.item() > 0.1
    truncated.backward()  # the empty "other" bucket adds no NaN to the gradient
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_a_truncated_target_keeps_the_rest_in_one_bucket(tokenizer):
    vocab = 6
    p = torch.tensor([[0.5, 0.2, 0.1, 0.1, 0.05, 0.05]], dtype=torch.float16)
    soft = SoftTargets.from_dense(p, 2, torch.tensor([0]))
    assert soft.ids.tolist() == [[0, 1]] and soft.rest.tolist() == pytest.approx([0.3], abs=1e-3)
    log_q = torch.log(torch.tensor([[0.25, 0.25, 0.2, 0.1, 0.1, 0.1]]))
    # KL over {0, 1, other}: 0.5 log(0.5/0.25) + 0.2 log(0.2/0.25) + 0.3 log(0.3/0.5)
    expected = 0.5 * torch.log(torch.tensor(2.0)) + 0.2 * torch.log(torch.tensor(0.8))
    expected += 0.3 * torch.log(torch.tensor(0.6))
    assert float(truncated_kl(log_q, soft)) == pytest.approx(float(expected), abs=1e-3)
    dense = (p.float() * (torch.log(p.float()) - log_q)).sum()
    assert float(truncated_kl(log_q, soft)) <= float(dense)  # coarsening never raises the KL
    assert truncated_kl(log_q, SoftTargets.from_dense(p, vocab, torch.tensor([0]))).item() == (
        pytest.approx(float(dense), abs=1e-3)
    )


def test_k_zero_is_a_hard_target_on_the_committed_token(model, batcher, tokenizer):
    batch = batcher.make([0, 1], pad_with=tokenizer.eos_id)
    probs = _teacher_like(batch, tokenizer.vocab_size)
    commit = torch.zeros_like(batch.response_ids)
    hard = SoftTargets.from_dense(probs, 0, batch.response_ids)
    assert hard.probs.shape == batch.response_ids.shape + (1,)
    assert torch.equal(hard.ids[..., 0].long(), batch.response_ids)
    soft = SoftTargets.from_dense(probs, 16, batch.response_ids)
    one_hot = _loss(model, batch, hard, commit, batch.response_mask, tokenizer)
    ce = _loss(model, batch, soft, commit, batch.response_mask, tokenizer, hard_weight=1.0)
    assert float(one_hot) == pytest.approx(float(ce), abs=1e-5)


def test_the_collected_store_is_n_by_r_by_k(model, batcher, tokenizer):
    def run(top_k: int):  # a bias of 4 ends within 16 tokens, not always at once
        return collect_with_eos_bias(model, batcher, [0, 1, 2, 3], tokenizer, 4.0, top_k=top_k)

    (collected, stats), (dense, _), (hard, _) = run(3), run(tokenizer.vocab_size), run(0)
    assert collected is not None and dense is not None and hard is not None and stats.kept > 0
    n, r = collected.response_ids.shape
    assert collected.soft.probs.shape == collected.soft.ids.shape == (n, r, 3)
    assert collected.soft.nbytes == n * r * (3 * 2 + 3 * 4 + 4)  # fp16 probs, int32 ids, fp32 rest
    assert hard.soft.nbytes == n * r * (2 + 4 + 4)
    assert torch.equal(collected.response_ids, dense.response_ids)
    assert torch.equal(collected.soft.ids, dense.soft.ids[..., :3])
    # the rest is what the top 3 leave of the dense store's mass, where a position is live
    left = dense.soft.probs.float().sum(-1) - collected.soft.probs.float().sum(-1)
    live = collected.live
    torch.testing.assert_close(collected.soft.rest[live], left[live], atol=2e-3, rtol=0)
    factorised = factorise(
        model, batcher, collected, mask_id=tokenizer.mask_id, block_size=4, batch_size=4, top_k=3
    )
    assert factorised.soft.probs.shape == (n, r, 3)
    assert (factorised.soft.rest[live] > 0).all()
    hard_marginals = factorise(
        model, batcher, collected, mask_id=tokenizer.mask_id, block_size=4, batch_size=4, top_k=0
    )
    assert torch.equal(hard_marginals.soft.ids, factorised.soft.ids[..., :1])  # each marginal's argmax
    assert hard_marginals.soft.probs.unique().tolist() == [1.0]
