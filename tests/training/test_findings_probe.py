"""The findings probe: targets read from reports, a loss that reaches the vision tower, plain checkpoints."""

from __future__ import annotations

import torch

from echo.findings import FINDINGS
from echo.training.findings_probe import PROBE_FILE, ProbedModel, probe_loss, report_targets
from echo.training.objectives import ar_loss


def test_targets_are_the_positive_findings_the_labeler_reads() -> None:
    targets = report_targets(
        [
            "FINDINGS: Small left pleural effusion. Heart size is normal. No pneumothorax.\n"
            "IMPRESSION: Small left pleural effusion.",
            "FINDINGS: The lungs are clear. No pleural effusion or pneumothorax.\nIMPRESSION: Normal.",
            "FINDINGS: Cardiomegaly. A pacemaker is in place.\nIMPRESSION: Cardiomegaly.",
        ]
    )
    assert targets.shape == (3, len(FINDINGS))
    positive = [{FINDINGS[j] for j in row.nonzero().flatten().tolist()} for row in targets]
    assert positive == [{"pleural_effusion"}, set(), {"cardiomegaly", "pacemaker"}]
    assert report_targets([]).shape == (0, len(FINDINGS))


def test_probe_loss_reaches_the_vision_tower_and_shares_its_features(model, batcher) -> None:
    probed = ProbedModel(model)
    batch = batcher.make([0, 1, 2], model.config.pad_token_id or 0)
    targets = torch.tensor([[1.0] + [0.0] * (len(FINDINGS) - 1)] * 3)
    features = model.encode_images(batch.pixel_values, batch.image_grid_thw)
    loss = probe_loss(probed, features, targets)
    loss.backward()
    assert probed.probe.weight.grad is not None and probed.probe.weight.grad.abs().sum() > 0
    assert all(p.grad is not None for p in model.visual.merger.parameters())
    assert all(p.grad is None for p in model.model.layers.parameters())  # the decoder is not involved
    # AR loss on precomputed features equals AR loss that runs the tower itself
    with torch.no_grad():
        assert torch.allclose(ar_loss(model, batch, features.detach()), ar_loss(model, batch), atol=1e-6)


def test_probe_round_trips_through_a_directory(model, tmp_path) -> None:
    probed = ProbedModel(model)
    probed.save_probe(tmp_path)
    other = ProbedModel(model)
    assert not torch.equal(other.probe.weight, probed.probe.weight)
    other.load_probe(tmp_path)
    assert torch.equal(other.probe.weight, probed.probe.weight)
    assert (tmp_path / PROBE_FILE).is_file()
