"""`echo-train probe`: a linear probe per finding on a checkpoint's image features, and on the pixels."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from echo.cli import app
from echo.data.preprocess import PreprocessConfig
from echo.data.synthetic import generate_dataset
from echo.findings import FINDINGS
from echo.model import EchoVLConfig, EchoVLM
from echo.tokenizer import ReportTokenizer
from echo.training.checkpoint import GenerationSpec, save_checkpoint
from echo.training.vision_probe import finding_matrix, image_features, pixel_features, probe_scores

from .conftest import SIDE


def test_finding_matrix_counts_only_positive_labels() -> None:
    rows = [
        {"cardiomegaly": "positive", "pleural_effusion": "negative"},
        {"pleural_effusion": "uncertain", "pneumothorax": "positive"},
        {},
    ]
    matrix = finding_matrix(rows)
    assert matrix.shape == (3, len(FINDINGS))
    column = {finding: i for i, finding in enumerate(FINDINGS)}
    assert matrix[0, column["cardiomegaly"]] == 1 and matrix[0].sum() == 1
    assert matrix[1, column["pneumothorax"]] == 1 and matrix[1, column["pleural_effusion"]] == 0
    assert matrix[2].sum() == 0


def test_a_finding_the_features_carry_scores_near_one_and_noise_near_a_half() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 12))
    y = np.zeros((600, len(FINDINGS)), dtype=np.int8)
    y[:, 0] = x[:, 3] + 0.3 * rng.normal(size=600) > 0  # carried by feature 3
    y[:, 1] = rng.random(600) < 0.3  # unrelated to every feature
    y[:400, 2] = rng.random(400) < 0.2  # no positive among the scored rows
    scores = probe_scores(x[:400], y[:400], x[400:], y[400:])
    assert [s.finding for s in scores] == list(FINDINGS)
    assert scores[0].auc > 0.95
    assert 0.35 < scores[1].auc < 0.65
    assert scores[2].auc is None and scores[2].eval_positives == 0
    assert scores[0].train_positives == int(y[:400, 0].sum())


def test_pixel_features_pool_each_image_to_cells() -> None:
    dark = np.zeros((SIDE, SIDE), dtype=np.uint8)
    lower_bright = dark.copy()
    lower_bright[SIDE // 2 :] = 255
    features = pixel_features([dark, lower_bright], 2)
    assert features.shape == (2, 4)
    np.testing.assert_allclose(features[0], 0.0)
    np.testing.assert_allclose(features[1], [0.0, 0.0, 1.0, 1.0])  # raster order: the lower two cells


def test_image_features_keep_where_each_token_is(model, batcher) -> None:
    """The tiny tower's 56 px images make 2 x 2 merged tokens: 2 x 2 cells are the tokens in raster
    order, 1 x 1 is their mean."""
    hidden = model.config.hidden_size
    whole = image_features(model, batcher, cells=1, batch_size=3)  # batches cut across the studies
    cells = image_features(model, batcher, cells=2, batch_size=3)
    assert whole.shape == (len(batcher.examples.ids), hidden)
    assert cells.shape == (len(batcher.examples.ids), 4 * hidden)
    study = batcher.make([5], pad_with=0)
    with torch.inference_mode():
        tokens = model.encode_images(study.pixel_values, study.image_grid_thw)
    assert tokens.shape[0] == 4
    np.testing.assert_allclose(whole[5], tokens.mean(dim=0).numpy(), rtol=1e-5, atol=1e-6)
    per_cell = cells[5].reshape(hidden, 4).T  # (channel, cell) flattened channel-major
    np.testing.assert_allclose(per_cell, tokens.numpy(), rtol=1e-5, atol=1e-6)
    assert not np.allclose(cells[0], cells[1])  # different images, different features


def test_the_command_prints_a_score_per_finding_for_features_and_pixels(tmp_path) -> None:
    manifest = generate_dataset(48, seed=5, out_dir=tmp_path / "data", size=96, workers=1)
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    tokenizer = ReportTokenizer.train([r["report"] for r in rows], vocab_size=400, min_frequency=1)
    torch.manual_seed(0)
    preprocess = PreprocessConfig(min_pixels=56 * 56, max_pixels=56 * 56).to_dict()
    model = EchoVLM(EchoVLConfig.tiny(vocab_size=tokenizer.vocab_size, block_size=4, preprocess=preprocess))
    save_checkpoint(model, tokenizer, GenerationSpec(max_new_tokens=32), tmp_path / "ckpt")
    args = ["probe", "--checkpoint", str(tmp_path / "ckpt"), "--data", str(manifest)]
    result = CliRunner().invoke(
        app, [*args, "--fit-split", "all", "--eval-split", "all", "--cells", "2", "--json"]
    )
    assert result.exit_code == 0, result.output
    scores = json.loads(result.output)
    assert set(scores) == {"tokens", "pixels"}
    for rows_ in scores.values():
        assert [row["finding"] for row in rows_] == list(FINDINGS)
        assert all(row["auc"] is None or 0.0 <= row["auc"] <= 1.0 for row in rows_)
        assert any(row["auc"] is not None for row in rows_)
    table = CliRunner().invoke(app, [*args, "--fit-split", "all", "--eval-split", "all", "--no-pixels"])
    assert table.exit_code == 0 and "pleural_effusion" in table.output and "pixels" not in table.output


def test_a_missing_checkpoint_is_a_one_line_error(tmp_path) -> None:
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text("")
    result = CliRunner().invoke(
        app, ["probe", "--checkpoint", str(tmp_path / "nowhere"), "--data", str(manifest)]
    )
    assert result.exit_code != 0 and "not a checkpoint directory" in str(result.exception or result.output)


@pytest.mark.parametrize("cells", [0, -1])
def test_a_grid_below_one_cell_is_refused(cells, model, batcher) -> None:
    from echo.errors import UserError

    with pytest.raises(UserError, match="cells"):
        pixel_features([np.zeros((4, 4), dtype=np.uint8)], cells)
    with pytest.raises(UserError, match="cells"):
        image_features(model, batcher, cells)
