"""Stage 1's optional auxiliary loss: a linear probe on the pooled image tokens that predicts the
findings the report states.

The targets come from the rule-based labeler run on each training report (a finding the report
states as present is 1, anything else 0), so a site's own report archive supplies them with no
extra annotation. The probe's gradient reaches the vision tower and merger directly, which teaches
them to carry the findings long before the next-token loss alone does (on the synthetic set the
language of the report is learned in a few hundred steps, its findings thousands later). The probe
is training-only: checkpoints stay plain Qwen2.5-VL directories, and validation loss stays the pure
next-token loss so runs with and without the probe compare.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from echo.findings import FINDINGS, Label
from echo.metrics.labeler import label_report

PROBE_FILE = "findings_probe.pt"


def report_targets(reports: Sequence[str]) -> torch.Tensor:
    """(n, len(FINDINGS)) float: 1 where the labeler reads the finding as present in the report."""
    rows = []
    for report in reports:
        labels = label_report(report)
        rows.append([1.0 if labels.get(finding) == Label.POSITIVE else 0.0 for finding in FINDINGS])
    return torch.tensor(rows, dtype=torch.float32).reshape(len(rows), len(FINDINGS))


class ProbedModel(nn.Module):
    """The VLM being trained plus the probe; the trainer optimises both, checkpoints hold the VLM."""

    def __init__(self, vlm: nn.Module) -> None:
        super().__init__()
        self.vlm = vlm
        self.probe = nn.Linear(vlm.config.hidden_size, len(FINDINGS))

    def probe_logits(self, features: torch.Tensor, batch_size: int) -> torch.Tensor:
        """Image features (b * n_tokens, H), every image of one grid -> (b, len(FINDINGS))."""
        return self.probe(features.view(batch_size, -1, features.shape[-1]).mean(dim=1))

    def save_probe(self, directory: Path) -> None:
        torch.save(self.probe.state_dict(), directory / PROBE_FILE)

    def load_probe(self, directory: Path) -> None:
        if (directory / PROBE_FILE).is_file():
            self.probe.load_state_dict(torch.load(directory / PROBE_FILE, weights_only=True))


def probe_loss(model: ProbedModel, features: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of the probe against the report-derived targets (b, len(FINDINGS))."""
    logits = model.probe_logits(features, targets.shape[0])
    return F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype))
