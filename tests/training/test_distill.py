import pytest
import torch

from echo.training.dcd_stage import collect, factorise
from echo.training.distill import dcd_loss, has_repetition_loop, step_weights

from .conftest import collect_with_eos_bias


def test_step_weights():
    steps = torch.tensor([0, 1, 2, 3])
    assert step_weights(steps, 4, "uniform").tolist() == [1, 1, 1, 1]
    assert step_weights(steps, 4, "decreasing").tolist() == pytest.approx([1.0, 5 / 6, 4 / 6, 0.5])
    assert step_weights(steps, 4, "increasing").tolist() == pytest.approx([0.5, 4 / 6, 5 / 6, 1.0])
    with pytest.raises(ValueError, match="not one of"):
        step_weights(steps, 4, "sideways")


@pytest.mark.parametrize(
    ("tokens", "looping"),
    [
        ([1, 2, 3, 4, 5, 6, 7, 8], False),
        ([1, 2, 3, 4, 1, 2, 3, 4], False),  # twice is a phrase, not a loop
        ([1, 2, 3, 4, 1, 2, 3, 4, 1, 2, 3, 4], True),
        ([9, 9, 9, 9, 9, 9], True),
    ],
)
def test_repetition_loops_are_detected(tokens, looping):
    assert has_repetition_loop(tokens) is looping


@pytest.fixture
def targets(model, batcher, tokenizer):
    teacher = model.eval()
    collected, stats = collect(
        teacher,
        batcher,
        [0, 1, 2, 3],
        block_size=4,
        threshold=0.85,
        max_new_tokens=16,
        batch_size=2,
        eos_id=tokenizer.eos_id,
        description="test",
    )
    return collected, stats


def test_collect_keeps_only_trajectories_that_end(targets):
    collected, stats = targets
    # An untrained teacher rarely writes eos within 16 tokens: those rows are counted and dropped.
    assert stats.kept + stats.no_eos + stats.repetition == 4
    if collected is not None:
        n, length = collected.response_ids.shape
        assert collected.soft.probs.shape == (n, length, 16) and length % 4 == 0
        # the committed token is the argmax of the distribution it was committed from
        live = collected.live
        assert torch.equal(collected.soft.ids[..., 0].long()[live], collected.response_ids[live])


def test_collected_targets_from_a_teacher_that_ends(model, batcher, tokenizer):
    """Bias the teacher towards eos so trajectories end: then targets are stitched per commit step."""
    collected, stats = collect_with_eos_bias(model, batcher, [0, 1, 2], tokenizer, 50.0, batch_size=3)
    assert stats.kept == 3 and collected is not None
    assert (collected.response_ids[:, 0] == tokenizer.eos_id).all()
    assert collected.commit_step.max() < 4


def test_dcd_loss_is_zero_when_the_student_is_the_target(model, batcher, tokenizer):
    """KL(p || q) = 0 when the targets are the student's own one-step marginals."""
    model.eval()
    collected = _fake_targets(batcher, tokenizer)
    own = factorise(model, batcher, collected, mask_id=tokenizer.mask_id, block_size=4, batch_size=4)
    batch = batcher.make(own.indices, pad_with=0)
    batch.response_ids, batch.response_mask = own.response_ids, own.live
    loss = dcd_loss(
        model,
        batch,
        own.soft,
        own.commit_step,
        own.live,
        mask_id=tokenizer.mask_id,
        eos_id=tokenizer.eos_id,
        block_size=4,
        eos_weight=0.0,
    )
    assert float(loss) == pytest.approx(0.0, abs=2e-3)  # float16 targets
    with_eos = dcd_loss(
        model,
        batch,
        own.soft,
        own.commit_step,
        own.live,
        mask_id=tokenizer.mask_id,
        eos_id=tokenizer.eos_id,
        block_size=4,
        eos_weight=1.0,
    )
    assert float(with_eos) > float(loss)


def _fake_targets(batcher, tokenizer):
    from echo.training.distill import SoftTargets, Targets

    batch = batcher.make([0, 1], pad_with=tokenizer.eos_id)
    n, length = batch.response_ids.shape
    probs = torch.full((n, length, tokenizer.vocab_size), 1.0 / tokenizer.vocab_size, dtype=torch.float16)
    return Targets(
        [0, 1],
        batch.response_ids,
        torch.ones((n, length), dtype=torch.bool),
        SoftTargets.from_dense(probs, tokenizer.vocab_size, batch.response_ids),
        torch.zeros((n, length), dtype=torch.long),
    )


def test_hard_weight_mixes_cross_entropy_on_the_committed_token(model, batcher, tokenizer):
    """With the student's own marginals as targets the KL is 0: what remains is the hard CE share."""
    model.eval()
    collected = _fake_targets(batcher, tokenizer)
    own = factorise(model, batcher, collected, mask_id=tokenizer.mask_id, block_size=4, batch_size=4)
    batch = batcher.make(own.indices, pad_with=0)
    batch.response_ids, batch.response_mask = own.response_ids, own.live

    def loss(hard_weight: float) -> float:
        return float(
            dcd_loss(
                model,
                batch,
                own.soft,
                own.commit_step,
                own.live,
                mask_id=tokenizer.mask_id,
                eos_id=tokenizer.eos_id,
                block_size=4,
                step_weighting="uniform",
                eos_weight=0.0,
                hard_weight=hard_weight,
            )
        )

    hard, half = loss(1.0), loss(0.5)
    assert hard > 0.1  # an untrained student is unsure of the committed tokens
    assert half == pytest.approx(0.5 * hard, abs=2e-3)
    with pytest.raises(ValueError, match="hard_weight"):
        loss(1.5)


def test_a_student_to_fine_tune_must_match_the_teacher(model, tokenizer):
    from types import SimpleNamespace

    from echo.commands.train_dcd import check_same_model
    from echo.errors import UserError

    check_same_model(model, tokenizer, model, tokenizer)  # the same model: fine
    wider = SimpleNamespace(state_dict=lambda: {"lm_head.weight": torch.zeros(3, 5)})
    with pytest.raises(UserError, match="another architecture"):
        check_same_model(model, tokenizer, wider, tokenizer)
    other_vocab = SimpleNamespace(backend=SimpleNamespace(get_vocab=lambda: {"a": 0}))
    with pytest.raises(UserError, match="another tokenizer"):
        check_same_model(model, tokenizer, model, other_vocab)


def test_a_deeper_student_is_fine_tuned_with_its_teacher(model, tokenizer):
    from echo.commands.train_dcd import check_same_model
    from echo.errors import UserError
    from echo.training.deepen import deepen

    check_same_model(model, tokenizer, deepen(model, 3), tokenizer)  # --student-layers' output
    narrower = deepen(model, 3)
    narrower.model.layers[0].mlp.up_proj = torch.nn.Linear(64, 32, bias=False)
    with pytest.raises(UserError, match="another architecture"):
        check_same_model(model, tokenizer, narrower, tokenizer)
