"""Does a checkpoint's vision tower carry each finding? A linear probe per finding on its image tokens.

When a model never writes a finding, the cause is either the image features (the tower does not
separate the studies that have it) or the decoder (the tokens do, the text does not follow). The
probe asks the first question: for every finding, a logistic regression on each study's image
tokens laid out on their grid and average-pooled to `cells` x `cells` (so where a sign is, one base
or the other, stays in the features: the decoder reads the tokens, not a summary of them), fitted on
one split and scored by ROC AUC on another. The same probe on the input image itself, pooled to the
same `cells` x `cells`, is the baseline: what a linear reader gets from the pixels at that layout.
A finding the pixels carry and the tokens do not is lost in the tower; one the tokens carry and the
reports do not name is lost in the decoder; one that neither carries linearly (a small nodule
anywhere in a lung) is beyond a linear probe, and the table says nothing about it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from echo.errors import UserError
from echo.findings import FINDINGS, Label
from echo.training.batches import Batcher
from echo.training.examples import shape_groups


@dataclass(frozen=True)
class ProbeScore:
    finding: str
    auc: float | None  # None: one split has no positive (or no negative) study of it
    train_positives: int
    eval_positives: int


def finding_matrix(labels: Sequence[dict[str, str]]) -> np.ndarray:
    """(n, len(FINDINGS)) 0/1: the studies' reference labels (positive = 1, anything else = 0)."""
    return np.array(
        [[1 if row.get(finding) == Label.POSITIVE else 0 for finding in FINDINGS] for row in labels],
        dtype=np.int8,
    ).reshape(len(labels), len(FINDINGS))


@torch.inference_mode()
def image_features(model, batcher: Batcher, cells: int = 4, batch_size: int = 64) -> np.ndarray:
    """(n, cells x cells x hidden): each study's image tokens (after the merger) on their grid,
    average-pooled to cells x cells."""
    _check_cells(cells)
    model.eval()
    merge = model.config.vision.spatial_merge_size
    n = len(batcher.examples.ids)
    out = np.zeros((n, cells * cells * model.config.hidden_size), dtype=np.float32)
    for group in shape_groups(batcher.examples.images, range(n)):
        for start in range(0, len(group), batch_size):
            rows = group[start : start + batch_size]
            batch = batcher.make(rows, pad_with=0)
            tokens = model.encode_images(batch.pixel_values.to(model.dtype), batch.image_grid_thw)
            _, height, width = (int(v) for v in batch.image_grid_thw[0])
            # the merged tokens come in raster order over the (height / merge, width / merge) grid
            grid = tokens.float().view(len(rows), height // merge, width // merge, -1).permute(0, 3, 1, 2)
            out[rows] = F.adaptive_avg_pool2d(grid, cells).flatten(1).numpy()
    return out


def pixel_features(images: Sequence[np.ndarray], cells: int) -> np.ndarray:
    """(n, cells x cells): each image (uint8, its model input size) average-pooled to cells x cells."""
    _check_cells(cells)
    rows = []
    for image in images:
        pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0)[None, None]
        rows.append(F.adaptive_avg_pool2d(pixels, cells).flatten().numpy())
    return np.stack(rows)


def _check_cells(cells: int) -> None:
    if cells < 1:
        raise UserError(f"the probe's grid must be at least 1 x 1 cells, got {cells}")


def probe_scores(
    train_x: np.ndarray, train_y: np.ndarray, eval_x: np.ndarray, eval_y: np.ndarray, l2: float = 1.0
) -> list[ProbeScore]:
    """One standardised, L2-regularised logistic regression per finding (column of y), fitted on the
    train rows and scored by ROC AUC on the eval rows."""
    scores = []
    for column, finding in enumerate(FINDINGS):
        fit_y, score_y = train_y[:, column], eval_y[:, column]
        auc = None
        if 0 < fit_y.sum() < len(fit_y) and 0 < score_y.sum() < len(score_y):
            probe = make_pipeline(StandardScaler(), LogisticRegression(C=1.0 / l2, max_iter=2000))
            probe.fit(train_x, fit_y)
            auc = float(roc_auc_score(score_y, probe.decision_function(eval_x)))
        scores.append(ProbeScore(finding, auc, int(fit_y.sum()), int(score_y.sum())))
    return scores
