"""Checkpoint selection: out/best by lowest validation loss, or by the findings F1 of the model's reports."""

from __future__ import annotations

import json

import pytest
import torch

from echo.errors import UserError
from echo.training import predict
from echo.training.checkpoint import GenerationSpec
from echo.training.loop import LoopConfig, Trainer
from echo.training.selection import findings_f1_scorer

from .conftest import REPORTS, example_set


def _trainer(tmp_path, score=None) -> Trainer:
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)

    def save(m, directory):  # the step a checkpoint was written at tells which one `best` is
        (directory / "step.json").write_text(json.dumps(trainer.state.step))

    config = LoopConfig(steps=6, lr=0.05, warmup_steps=1, val_every=2, checkpoint_every=2)
    trainer = Trainer(model, tmp_path, config, save, "test", score=score)
    return trainer


def _run(trainer: Trainer) -> None:
    x, y = torch.randn(32, 4), torch.randn(32, 1)
    loss = lambda m, _batch: torch.nn.functional.mse_loss(m(x), y)  # noqa: E731
    trainer.run(iter(lambda: None, object()), loss, loss, [None])


def test_without_a_score_best_is_the_lowest_validation_loss(tmp_path):
    trainer = _trainer(tmp_path)
    _run(trainer)
    losses = [entry["val_loss"] for entry in trainer.state.history]
    assert losses == sorted(losses, reverse=True)  # plain descent on a fixed batch: the last is best
    assert json.loads((tmp_path / "best" / "step.json").read_text()) == 6
    assert all("val_f1" not in entry for entry in trainer.state.history)


def test_with_a_score_best_is_the_highest_score_even_when_the_loss_disagrees(tmp_path):
    scores = iter([0.1, 0.7, 0.4])
    trainer = _trainer(tmp_path, score=lambda: next(scores))
    _run(trainer)
    assert [entry["val_f1"] for entry in trainer.state.history] == [0.1, 0.7, 0.4]
    assert trainer.state.best_score == 0.7
    assert json.loads((tmp_path / "best" / "step.json").read_text()) == 4
    # The loss is still tracked, so runs selected either way compare.
    assert trainer.state.best_val_loss == min(entry["val_loss"] for entry in trainer.state.history)


def test_an_unknown_criterion_is_a_clear_error():
    with pytest.raises(UserError, match="--select-by must be one of loss, f1"):
        LoopConfig(select_by="bleu")


def test_the_scorer_decodes_as_served_and_reads_findings_against_the_references(
    model, tokenizer, monkeypatch
):
    examples = example_set(4)  # reports 0-3: normal, pleural effusion, consolidation, cardiomegaly
    seen = {}

    def fake_predict_rows(m, tok, prompt, subset, options, batch_size):
        seen["options"] = options
        written = {"s1": REPORTS[1], "s2": REPORTS[2], "s3": REPORTS[0]}  # misses the cardiomegaly
        # Out of order on purpose: the scorer matches rows to studies by id.
        return [{"id": i, "report": written.get(i, REPORTS[0])} for i in reversed(subset.ids)]

    monkeypatch.setattr(predict, "predict_rows", fake_predict_rows)
    spec = GenerationSpec(decode="onestep", max_new_tokens=40)
    model.train()
    score = findings_f1_scorer(model, tokenizer, spec, examples)()
    # Two of three positives found, none invented: precision 1, recall 2/3.
    assert score == pytest.approx(0.8)
    assert seen["options"].decode == "onestep" and seen["options"].max_new_tokens == 40
    assert model.training  # the scorer leaves the model as it found it


def test_manifest_labels_win_over_the_labeler(model, tokenizer, monkeypatch):
    examples = example_set(2)
    examples.labels[0] = {"pneumothorax": "positive"}  # the manifest says so, whatever the text
    monkeypatch.setattr(
        predict,
        "predict_rows",
        lambda m, tok, prompt, subset, options, bs: [{"id": i, "report": REPORTS[0]} for i in subset.ids],
    )
    assert findings_f1_scorer(model, tokenizer, GenerationSpec(), examples)() == 0.0
    monkeypatch.setattr(
        predict,
        "predict_rows",
        lambda m, tok, prompt, subset, options, bs: [
            {"id": i, "report": "FINDINGS: Small right pneumothorax." if i == "s0" else r}
            for i, r in zip(subset.ids, subset.reports, strict=True)
        ],
    )
    assert findings_f1_scorer(model, tokenizer, GenerationSpec(), examples)() == pytest.approx(1.0)


def test_a_refine_spec_is_scored_with_its_own_threshold_not_the_multistep_tau(model, tokenizer, monkeypatch):
    examples = example_set(2)
    seen = {}

    def fake_predict_rows(m, tok, prompt, subset, options, batch_size):
        seen["options"] = options
        return [{"id": i, "report": REPORTS[0]} for i in subset.ids]

    monkeypatch.setattr(predict, "predict_rows", fake_predict_rows)
    spec = GenerationSpec(decode="refine", threshold=0.85, refine_threshold=0.4)
    findings_f1_scorer(model, tokenizer, spec, examples)()
    assert seen["options"].decode == "refine" and seen["options"].threshold == 0.4
    findings_f1_scorer(model, tokenizer, GenerationSpec(decode="multistep", refine_threshold=0.4), examples)()
    assert seen["options"].threshold == 0.85
