"""Fluency: the bundled AR model's per-token NLL of a draft, given the study's image."""

from __future__ import annotations

import json

import pytest

from echo.data.synthetic import generate_dataset
from echo.errors import UserError
from echo.metrics.evaluate import evaluate
from echo.training.fluency import BUNDLED_AR, ArFluency

pytest.importorskip("torch")


@pytest.fixture(scope="module")
def studies(tmp_path_factory):
    root = tmp_path_factory.mktemp("fluency")
    manifest = generate_dataset(4, seed=11, out_dir=root, size=96, workers=1)
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    return manifest, rows


@pytest.fixture(scope="module")
def scorer(studies):
    return ArFluency(BUNDLED_AR, studies[0], batch_size=3)


def broken(report: str) -> str:
    """What a one-step student writes when it fails: words doubled, a section emptied."""
    words = report.split()
    return " ".join(word for word in words for _ in (0, 1))


def test_broken_text_costs_more_nats_per_token_than_the_signed_report(studies, scorer):
    _, rows = studies
    ids = [row["id"] for row in rows]
    signed = scorer(ids, [row["report"] for row in rows])
    doubled = scorer(ids, [broken(row["report"]) for row in rows])
    assert signed.reports == 4 and signed.tokens > 4 * 10
    assert 0.0 < signed.nll_per_token < doubled.nll_per_token
    assert doubled.nll_per_token - signed.nll_per_token > 1.0


def test_batching_does_not_change_the_score(studies, scorer):
    manifest, rows = studies
    ids, reports = [row["id"] for row in rows], [row["report"] for row in rows]
    one_by_one = ArFluency(BUNDLED_AR, manifest, batch_size=1)(ids, reports)
    together = scorer(ids, reports)
    assert one_by_one.tokens == together.tokens
    assert one_by_one.nll_per_token == pytest.approx(together.nll_per_token, rel=1e-4)


def test_evaluate_reports_fluency_when_given_a_scorer(studies, scorer):
    _, rows = studies
    preds = [{"id": row["id"], "report": row["report"]} for row in rows]
    result = evaluate(preds, rows, with_semscore=False, fluency=scorer)
    assert result["fluency"]["ar_nll_per_token"] == pytest.approx(
        scorer([r["id"] for r in rows], [r["report"] for r in rows]).nll_per_token
    )
    assert result["fluency"]["model"] == str(BUNDLED_AR)
    assert evaluate(preds, rows, with_semscore=False)["fluency"] is None


def test_unknown_studies_are_user_errors(scorer):
    with pytest.raises(UserError, match="fluency: study 'nope' is not in the manifest"):
        scorer(["nope"], ["FINDINGS: x"])
